# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO model
---------

The ``kho_inspect.model.kho`` module holds what ``kho-inspect kho status`` and
``kho-inspect kho fdt`` report: the KHO status of a kernel
(:class:`KhoStatus`) and a root FDT with its decoded sub-blobs
(:class:`KhoFdtReport`, :class:`BlobReport`). The blobs' decoded forms are the
codec types of :mod:`kho_inspect.fdt`. Nothing here touches drgn.

A :class:`KhoFdtReport` reads back from its JSON when that JSON holds the
bytes (``to_json(raw=True)``, the default; the command prints it with
``--raw``): every decoded form is a function of the bytes, except test_kho's
folio list, which lives in pages outside the blob and is taken from the JSON.
"""

from dataclasses import field, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from kho_inspect.fdt import (
    DecodedBlob,
    KhoRoot,
    KhoTestBlob,
    TestFolio,
    VmallocArea,
    decode_blob,
    decode_generic,
    decode_kho_root,
)
from kho_inspect.frozen import frozen
from kho_inspect.model.memblock import FlagTable

__all__ = (
    "DIRECTIONS",
    "DIRECTION_NAMES",
    "BlobReport",
    "KhoFdtReport",
    "KhoStatus",
)

DIRECTIONS = ("out", "in")
"""``"out"``: ``kho_out``, what this kernel hands over; ``"in"``: ``kho_in``, what it received."""

DIRECTION_NAMES = {"out": "outgoing", "in": "incoming"}


# --- status -----------------------------------------------------------------


@frozen
class KhoStatus:
    """What ``kho-inspect kho status`` reports.

    ``kexec_count`` counts kexec boots since the last cold boot (0 on a cold
    boot); ``next_kexec_count`` is what the outgoing kexec-metadata hands on.
    ``compatible`` is the outgoing root FDT's (the ABI this kernel speaks),
    ``compatible_in`` the incoming one's (the ABI of the previous kernel).
    ``symbols`` maps a role (``kho_out``, ``kho_in``, ``kho_enable``, ``luo``,
    ``scratch``) to the name it was found as, ``None`` if not found.
    """

    release: Optional[str]
    enabled: Optional[bool]
    kho_boot: bool
    kexec_count: Optional[int]
    previous_release: Optional[str]
    next_kexec_count: Optional[int]
    compatible: Optional[str]
    compatible_in: Optional[str]
    luo: Optional[bool]
    liveupdate_num: Optional[int]
    memblock_flags: FlagTable
    fdt_out: Optional[int] = None
    fdt_in_phys: Optional[int] = None
    scratch_in_phys: Optional[int] = None
    mem_map_out: Optional[int] = None
    mem_map_in: Optional[int] = None
    scratch_areas: Optional[int] = None
    symbols: Mapping[str, Optional[str]] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {
            "release": self.release,
            "enabled": self.enabled,
            "kho_boot": self.kho_boot,
            "kexec_count": self.kexec_count,
            "previous_release": self.previous_release,
            "next_kexec_count": self.next_kexec_count,
            "compatible": self.compatible,
            "compatible_in": self.compatible_in,
            "luo": self.luo,
            "liveupdate_num": self.liveupdate_num,
            "memblock_flags": self.memblock_flags.to_json(),
            "fdt_out": self.fdt_out,
            "fdt_in_phys": self.fdt_in_phys,
            "scratch_in_phys": self.scratch_in_phys,
            "preserved_memory_map_out": self.mem_map_out,
            "preserved_memory_map_in": self.mem_map_in,
            "scratch_areas": self.scratch_areas,
            "symbols": dict(self.symbols),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "KhoStatus":
        """Rebuild a status from :meth:`to_json` output.

        :raises KeyError, TypeError, ValueError: the object has another shape.
        """
        return cls(
            release=obj["release"],
            enabled=obj["enabled"],
            kho_boot=bool(obj["kho_boot"]),
            kexec_count=obj["kexec_count"],
            previous_release=obj["previous_release"],
            next_kexec_count=obj["next_kexec_count"],
            compatible=obj["compatible"],
            compatible_in=obj["compatible_in"],
            luo=obj["luo"],
            liveupdate_num=obj["liveupdate_num"],
            memblock_flags=FlagTable.from_json(obj["memblock_flags"]),
            fdt_out=obj["fdt_out"],
            fdt_in_phys=obj["fdt_in_phys"],
            scratch_in_phys=obj["scratch_in_phys"],
            mem_map_out=obj["preserved_memory_map_out"],
            mem_map_in=obj["preserved_memory_map_in"],
            scratch_areas=obj["scratch_areas"],
            symbols=dict(obj["symbols"]),
            notes=tuple(str(n) for n in obj["notes"]),
        )


# --- FDT --------------------------------------------------------------------


@frozen
class BlobReport:
    """One sub-blob of a root FDT: where it is and what it decodes to.

    :param data: the blob's bytes, ``None`` if they could not be read
        (``error`` says why).
    :param decoded: :func:`kho_inspect.fdt.decode_blob` of ``data``.
    :param notes: why the bytes may be stale (incoming blobs the kernel freed).
    """

    name: str
    phys: Optional[int]
    size: Optional[int]
    data: Optional[bytes] = None
    decoded: Optional[DecodedBlob] = None
    error: Optional[str] = None
    notes: Tuple[str, ...] = ()

    @property
    def kind(self) -> Optional[str]:
        return self.decoded.kind if self.decoded else None

    @property
    def compatible(self) -> Optional[str]:
        return self.decoded.compatible if self.decoded else None

    @property
    def problem(self) -> Optional[str]:
        """The reason the blob could not be read or decoded, if any."""
        return self.error or (self.decoded.error if self.decoded else None)

    def to_json(self, order: str = "little", raw: bool = True) -> Dict[str, Any]:
        """The blob as ``kho fdt --json`` shows it (``raw``: with its bytes).

        The name is the key of the blob in its report's ``"blobs"``.
        """
        out: Dict[str, Any] = {"phys": self.phys, "size": self.size,
                               "compatible": self.compatible, "kind": self.kind}
        out["decoded"] = self.decoded.to_json(order)["decoded"] if self.decoded else None
        out["error"] = self.problem
        out["notes"] = list(self.notes)
        if raw:
            out["bytes"] = None if self.data is None else self.data.hex()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, name: str, order: str = "little",
                  page_size: int = 4096) -> "BlobReport":
        """Rebuild a blob from ``to_json(order, raw=True)``.

        :param name: the blob's name (its key in the report).
        :param order: the byte order the blob was decoded with.
        :param page_size: the target's ``PAGE_SIZE``.
        :raises KeyError, TypeError, ValueError: no ``"bytes"``, or another shape.
        """
        hexdata = obj["bytes"]
        common = {"name": name, "phys": obj["phys"], "size": obj["size"],
                  "notes": tuple(str(n) for n in obj["notes"])}
        if hexdata is None:
            return cls(**common, error=obj["error"])
        data = bytes.fromhex(hexdata)
        return cls(**common, data=data, decoded=_redecode(name, data, obj, order, page_size))


def _redecode(name: str, data: bytes, obj: Mapping[str, Any], order: str,
              page_size: int) -> DecodedBlob:
    # Decode the bytes again; what depended on memory outside the blob (the
    # test_kho folio list and its failure) comes from the JSON.
    decoded = decode_blob(name, data, page_size=page_size, byteorder=order)
    error = obj["error"]
    if error != decoded.error:
        kind, compat, value = decode_generic(data)
        return DecodedBlob(kind, compat, value, error)
    value = decoded.value
    folios = (obj["decoded"] or {}).get("folios") if decoded.kind == "kho-test" else None
    if isinstance(value, KhoTestBlob) and folios is not None and value.folios_info is not None:
        vm = obj["decoded"].get("vmalloc", {})
        area = VmallocArea(value.folios_info, tuple(int(c) for c in vm.get("chunks", ())),
                           tuple(int(b) for b in vm.get("blocks", ())))
        value = replace(value, folios=tuple(TestFolio(int(f["phys"]), int(f["order"]))
                                            for f in folios),
                        area=area, page_size=page_size)
        decoded = replace(decoded, value=value)
    return decoded


@frozen
class KhoFdtReport:
    """A root FDT (``direction`` ``"out"`` or ``"in"``) and its decoded sub-blobs.

    :param address: where the root FDT is (virtual for ``out``, physical for ``in``).
    :param data: the root FDT's bytes; ``root`` is their decoded form.
    :param blobs: name -> blob, in the order they were asked for.
    """

    direction: str
    address: int
    physical: bool
    data: bytes
    root: KhoRoot
    blobs: Mapping[str, BlobReport]
    byteorder: str = "little"
    page_size: int = 4096

    def to_json(self, raw: bool = True) -> Dict[str, Any]:
        """The report as ``kho fdt --json`` shows it; ``raw`` (``--raw``) adds
        the bytes, and only that form reads back with :meth:`from_json`.
        ``byteorder`` and ``page_size`` appear where they are not little-endian
        and 4096."""
        root = self.root.to_json()
        root.update(address=self.address, physical=self.physical, size=len(self.data),
                    tree=self.root.tree.to_json(self.byteorder))
        if raw:
            root["bytes"] = self.data.hex()
        out = {"direction": self.direction, "root": root,
               "blobs": {n: b.to_json(self.byteorder, raw) for n, b in self.blobs.items()}}
        if self.byteorder != "little":
            out["byteorder"] = self.byteorder
        if self.page_size != 4096:
            out["page_size"] = self.page_size
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "KhoFdtReport":
        """Rebuild a report from ``to_json(raw=True)`` (``kho fdt --raw --json``).

        :raises KeyError, TypeError, ValueError: no bytes, or another shape.
        :raises CorruptTreeError: the root bytes are not a KHO root FDT.
        """
        order, psize = str(obj.get("byteorder", "little")), int(obj.get("page_size", 4096))
        root = obj["root"]
        data = bytes.fromhex(root["bytes"])
        return cls(
            direction=str(obj["direction"]),
            address=int(root["address"]),
            physical=bool(root["physical"]),
            data=data,
            root=decode_kho_root(data, order),
            blobs={n: BlobReport.from_json(b, name=n, order=order, page_size=psize)
                   for n, b in obj["blobs"].items()},
            byteorder=order,
            page_size=psize,
        )

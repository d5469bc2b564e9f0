"""
KHO state
---------

The ``kho_inspect.kho`` module reads the Kexec HandOver globals of a kernel
(kernel/liveupdate/kexec_handover.c, Linux 7.3) and the FDT blobs they point
to:

* ``static struct kho_out kho_out``: ``void *fdt`` is the outgoing root FDT
  (one page from ``kho_alloc_preserve()``, a direct-map address) that the
  next kernel receives;
* ``static struct kho_in kho_in``: ``phys_addr_t fdt_phys`` is the incoming
  root FDT (nonzero exactly on a KHO boot, see ``is_kho_boot()``), and since
  the kexec-metadata change ``previous_release`` and ``kexec_count``;
* ``static bool kho_enable`` (``kho=``), and LUO's ``luo_global.enabled``
  (kernel/liveupdate/luo_core.c, ``liveupdate=``).

Symbols are looked up by lists of known names (static variables first in
their source file, then globally), never assumed; status reports which names
were found. Blobs are read in bulk, one ``prog.read()`` per blob, and decoded
by the pure :mod:`kho_inspect.fdt`.
"""

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import drgn
from drgn import Object, Program

from kho_inspect.errors import CorruptTreeError, KhoInspectError, NotKhoKernelError
from kho_inspect.fdt import (
    FDT_HEADER_SIZE,
    KEXEC_METADATA_NAME,
    MAX_BLOB_SIZE,
    DecodedBlob,
    KhoRoot,
    KhoSubtree,
    decode_blob,
    decode_kho_root,
    fdt_totalsize,
)
from kho_inspect.memblock import memblock_flag_table
from kho_inspect.model import FlagTable
from kho_inspect.radix import ReadPage
from kho_inspect.scratch import find_scratch_symbols
from kho_inspect.target import byteorder, find_variable, kernel_release

__all__ = (
    "KHO_OUT_SYMBOLS",
    "KHO_IN_SYMBOLS",
    "KHO_ENABLE_SYMBOLS",
    "LUO_SYMBOLS",
    "DIRECTIONS",
    "DIRECTION_NAMES",
    "kho_out",
    "kho_in",
    "kho_enabled",
    "is_kho_boot",
    "luo_state",
    "page_size",
    "read_root_fdt",
    "read_blob",
    "BlobReport",
    "KhoFdtReport",
    "read_kho_fdt",
    "KhoStatus",
    "kho_status",
)

KHO_SOURCE = "kexec_handover.c"
LUO_SOURCE = "luo_core.c"

KHO_OUT_SYMBOLS: Tuple[str, ...] = ("kho_out",)
"""Known names of ``static struct kho_out`` (kexec_handover.c)."""

KHO_IN_SYMBOLS: Tuple[str, ...] = ("kho_in",)
"""Known names of ``static struct kho_in`` (kexec_handover.c)."""

KHO_ENABLE_SYMBOLS: Tuple[str, ...] = ("kho_enable",)
"""Known names of ``static bool kho_enable`` (kexec_handover.c)."""

LUO_SYMBOLS: Tuple[Tuple[str, str], ...] = (("luo_global", "enabled"),)
"""Known ``(variable, member)`` spellings of LUO's on/off switch (luo_core.c)."""

DIRECTIONS = ("out", "in")
DIRECTION_NAMES = {"out": "outgoing", "in": "incoming"}

_NO_KHO = "This kernel has no KHO support (CONFIG_KEXEC_HANDOVER=n): "


# --- symbols ----------------------------------------------------------------


def kho_out(prog: Program) -> Object:
    """The kernel's ``struct kho_out``.

    :raises NotKhoKernelError: no such variable (``CONFIG_KEXEC_HANDOVER=n``).
    """
    try:
        return find_variable(prog, KHO_OUT_SYMBOLS, KHO_SOURCE)[1]
    except LookupError as e:
        raise NotKhoKernelError(
            _NO_KHO + f"its debug info has no {' or '.join(KHO_OUT_SYMBOLS)} variable."
        ) from e


def kho_in(prog: Program) -> Optional[Object]:
    """The kernel's ``struct kho_in``, or ``None`` if it has none."""
    try:
        return find_variable(prog, KHO_IN_SYMBOLS, KHO_SOURCE)[1]
    except LookupError:
        return None


def kho_enabled(prog: Program) -> Optional[bool]:
    """``kho_enable`` (``kho=`` / ``CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT``).

    ``kho_init()`` clears it when it fails, so it is the kernel's own answer
    to ``kho_is_enabled()``. ``None`` if the variable cannot be found.
    """
    try:
        return bool(find_variable(prog, KHO_ENABLE_SYMBOLS, KHO_SOURCE)[1].value_())
    except LookupError:
        return None


def _member(obj: Optional[Object], name: str) -> Optional[Object]:
    if obj is None:
        return None
    try:
        return obj.member_(name)
    except LookupError:
        return None


def is_kho_boot(prog: Program) -> bool:
    """``is_kho_boot()``: whether ``kho_in.fdt_phys`` is nonzero."""
    fdt_phys = _member(kho_in(prog), "fdt_phys")
    return bool(fdt_phys is not None and fdt_phys.value_())


def luo_state(prog: Program) -> Tuple[Optional[str], Optional[bool], Optional[int]]:
    """LUO's switch: ``(symbol found, enabled, liveupdate_num)``.

    ``enabled`` is ``None`` when the kernel has no LUO (``CONFIG_LIVEUPDATE=n``);
    ``liveupdate_num`` is the incoming live-update number (0 on a first boot).
    """
    for var, member in LUO_SYMBOLS:
        try:
            obj = find_variable(prog, (var,), LUO_SOURCE)[1]
            enabled = bool(obj.member_(member).value_())
        except LookupError:
            continue
        num = _member(obj, "liveupdate_num")
        return f"{var}.{member}", enabled, None if num is None else num.value_()
    return None, None, None


def page_size(prog: Program) -> int:
    """``PAGE_SIZE`` of the target (4096 if the program does not say)."""
    try:
        return prog["PAGE_SIZE"].value_()
    except (LookupError, drgn.FaultError):
        return 4096


# --- reading blobs ----------------------------------------------------------


def _read(prog: Program, addr: int, size: int, physical: bool, what: str) -> bytes:
    try:
        return prog.read(addr, size, physical)
    except drgn.FaultError as e:
        kind = "physical" if physical else "virtual"
        raise CorruptTreeError(
            f"{what} at {kind} address {addr:#x} cannot be read ({e.message}): the pointer is "
            "corrupt, or the dump does not contain that memory."
        ) from e


def _read_fdt(prog: Program, addr: int, physical: bool, what: str) -> bytes:
    header = _read(prog, addr, FDT_HEADER_SIZE, physical, what)
    return _read(prog, addr, fdt_totalsize(header, what), physical, what)


def _out_fdt_address(prog: Program) -> int:
    fdt = kho_out(prog).fdt.value_()
    if not fdt:
        raise NotKhoKernelError(
            "kho_out.fdt is NULL: KHO is disabled on this kernel (boot with kho=on) or "
            "kho_init() failed (see the kernel log)."
        )
    return fdt


def _in_fdt_phys(prog: Program) -> int:
    kho_out(prog)  # a kernel without KHO says so first
    fdt_phys = _member(kho_in(prog), "fdt_phys")
    if fdt_phys is None or not fdt_phys.value_():
        raise NotKhoKernelError(
            "This kernel was not booted through KHO (kho_in.fdt_phys is 0), so it has no "
            "incoming FDT: use --out for the FDT it will hand over."
        )
    return fdt_phys.value_()


def read_root_fdt(prog: Program, direction: str = "out") -> Tuple[int, bool, bytes]:
    """Read the outgoing (``kho_out.fdt``) or incoming (``kho_in.fdt_phys``) root FDT.

    :param direction: ``"out"`` or ``"in"``.
    :return: ``(address, physical, bytes)``; the outgoing address is virtual.
    :raises NotKhoKernelError: no KHO, KHO off (out), or a cold boot (in).
    :raises CorruptTreeError: the page is unreadable or not an FDT.
    """
    if direction == "out":
        addr, physical = _out_fdt_address(prog), False
    elif direction == "in":
        addr, physical = _in_fdt_phys(prog), True
    else:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    what = f"The {DIRECTION_NAMES[direction]} KHO root FDT"
    return addr, physical, _read_fdt(prog, addr, physical, what)


def read_blob(prog: Program, sub: KhoSubtree) -> bytes:
    """The bytes of one sub-blob: ``preserved-data`` phys, ``blob-size`` bytes.

    Without ``blob-size`` (kho-v1/v2, where every blob was an FDT) the FDT
    header gives the size.

    :raises CorruptTreeError: no address, an absurd size, or unreadable memory.
    """
    what = f"KHO blob {sub.name}"
    if sub.phys is None:
        raise CorruptTreeError(f"{what} has no usable address: {'; '.join(sub.problems)}")
    if sub.size is None:
        return _read_fdt(prog, sub.phys, True, what)
    if sub.size > MAX_BLOB_SIZE:
        raise CorruptTreeError(
            f"{what} claims {sub.size} bytes, more than the {MAX_BLOB_SIZE} kho-inspect reads: "
            "the FDT is corrupt."
        )
    return _read(prog, sub.phys, sub.size, True, what)


def _page_reader(prog: Program, size: int) -> ReadPage:
    return lambda phys: prog.read(phys, size, True)


# Why an incoming blob may show stale bytes (kernel-notes B9).
_STALE_IN = {
    "luo": "LUO frees its incoming blob in luo_early_startup() (kho_restore_free), so these "
           "bytes may already be reused.",
    "kho-test": "test_kho restores its folio list at boot and frees the list and its chunk "
                "pages, so the list read here may be stale.",
}


@dataclass
class BlobReport:
    """One sub-blob of a root FDT: where it is and what it decodes to."""

    name: str
    phys: Optional[int]
    size: Optional[int]
    data: Optional[bytes] = None
    decoded: Optional[DecodedBlob] = None
    error: Optional[str] = None
    notes: List[str] = field(default_factory=list)

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

    def to_json(self, order: str = "little", raw: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {"phys": self.phys, "size": self.size,
                               "compatible": self.compatible, "kind": self.kind}
        out["decoded"] = self.decoded.to_json(order)["decoded"] if self.decoded else None
        out["error"] = self.problem
        out["notes"] = list(self.notes)
        if raw:
            out["bytes"] = None if self.data is None else self.data.hex()
        return out


@dataclass
class KhoFdtReport:
    """A root FDT (``direction`` ``"out"`` or ``"in"``) and its decoded sub-blobs."""

    direction: str
    address: int
    physical: bool
    data: bytes
    root: KhoRoot
    blobs: Dict[str, BlobReport]
    byteorder: str = "little"
    page_size: int = 4096

    def to_json(self, raw: bool = False) -> Dict[str, Any]:
        root = self.root.to_json()
        root.update(address=self.address, physical=self.physical, size=len(self.data),
                    tree=self.root.tree.to_json(self.byteorder))
        if raw:
            root["bytes"] = self.data.hex()
        return {"direction": self.direction, "root": root,
                "blobs": {n: b.to_json(self.byteorder, raw) for n, b in self.blobs.items()}}


def _blob_report(prog: Program, sub: KhoSubtree, direction: str, order: str,
                 psize: int) -> BlobReport:
    report = BlobReport(sub.name, sub.phys, sub.size)
    try:
        report.data = read_blob(prog, sub)
    except CorruptTreeError as e:
        report.error = str(e)
        return report
    report.decoded = decode_blob(sub.name, report.data, _page_reader(prog, psize), psize, order)
    if direction == "in" and report.kind in _STALE_IN:
        report.notes.append(_STALE_IN[report.kind])  # type: ignore[index]
    return report


def _decoded_root(prog: Program, direction: str) -> Tuple[int, bool, bytes, KhoRoot]:
    addr, physical, data = read_root_fdt(prog, direction)
    return addr, physical, data, decode_kho_root(data, byteorder(prog))


def read_kho_fdt(prog: Program, direction: str = "out",
                 names: Optional[Sequence[str]] = None) -> KhoFdtReport:
    """Read and decode a root FDT and its sub-blobs.

    :param names: only these sub-blobs (all if ``None``).
    :raises NotKhoKernelError: see :func:`read_root_fdt`.
    :raises CorruptTreeError: the root FDT is unreadable or not ``kho-vN``.
    :raises KeyError: a name in ``names`` is not a subnode of the root.
    """
    addr, physical, data, root = _decoded_root(prog, direction)
    subs = {s.name: s for s in root.subtrees}
    missing = [n for n in names or () if n not in subs]
    if missing:
        raise KeyError(missing[0])
    wanted = [subs[n] for n in names] if names is not None else list(root.subtrees)
    order, psize = byteorder(prog), page_size(prog)
    blobs = {s.name: _blob_report(prog, s, direction, order, psize) for s in wanted}
    return KhoFdtReport(direction, addr, physical, data, root, blobs, order, psize)


# --- status -----------------------------------------------------------------


@dataclass
class KhoStatus:
    """What ``kho-inspect kho status`` reports.

    ``kexec_count`` counts kexec boots since the last cold boot (0 on a cold
    boot); ``next_kexec_count`` is what the outgoing kexec-metadata hands on.
    ``compatible`` is the outgoing root FDT's (the ABI this kernel speaks),
    ``compatible_in`` the incoming one's (the ABI of the previous kernel).
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
    symbols: Dict[str, Optional[str]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

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


def _symbol(prog: Program, names: Sequence[str], filename: Optional[str]) -> Optional[str]:
    try:
        return find_variable(prog, names, filename)[0]
    except LookupError:
        return None


def _scratch(prog: Program, status: KhoStatus) -> None:
    try:
        array, count = find_scratch_symbols(prog)
    except NotKhoKernelError:
        status.symbols["scratch"] = None
        return
    status.symbols["scratch"] = f"{array}[:{count}]"
    with contextlib.suppress(drgn.FaultError):
        status.scratch_areas = prog[count].value_()


def _in_members(kin: Optional[Object], status: KhoStatus) -> Tuple[bool, bool]:
    # kexec_count and previous_release arrived with the kexec-metadata blob
    # (Breno Leitao, include/linux/kho/abi/kexec_metadata.h, 2026); older
    # kernels lack them and only the blob can tell.
    count, release = _member(kin, "kexec_count"), _member(kin, "previous_release")
    if count is not None:
        status.kexec_count = count.value_()
    if release is not None:
        status.previous_release = release.string_().decode(errors="replace") or None
    status.scratch_in_phys = _value(_member(kin, "scratch_phys"))
    return count is not None, release is not None


def _value(obj: Optional[Object]) -> Optional[int]:
    return None if obj is None else obj.value_()


def _root_and_metadata(prog: Program, direction: str, status: KhoStatus
                       ) -> Tuple[Optional[KhoRoot], Optional[BlobReport]]:
    try:
        root = _decoded_root(prog, direction)[3]
    except KhoInspectError as e:
        status.notes.append(f"Cannot decode the {DIRECTION_NAMES[direction]} root FDT: {e}")
        return None, None
    sub = root.subtree(KEXEC_METADATA_NAME)
    if sub is None:
        return root, None
    return root, _blob_report(prog, sub, direction, byteorder(prog), page_size(prog))


def _metadata(blob: Optional[BlobReport], direction: str, status: KhoStatus) -> Any:
    if blob is None or blob.kind != "kexec-metadata":
        if blob is not None:
            status.notes.append(
                f"Cannot decode the {DIRECTION_NAMES[direction]} kexec-metadata: {blob.problem}")
        return None
    return blob.decoded.value  # type: ignore[union-attr]


def _status_out(prog: Program, status: KhoStatus) -> None:
    status.fdt_out = kho_out(prog).fdt.value_() or None
    if status.fdt_out is None:
        return
    root, blob = _root_and_metadata(prog, "out", status)
    if root is not None:
        status.compatible, status.mem_map_out = root.compatible, root.mem_map_phys
    meta = _metadata(blob, "out", status)
    if meta is not None:
        status.next_kexec_count = meta.kexec_count


def _status_in(prog: Program, status: KhoStatus, have_members: bool) -> None:
    root, blob = _root_and_metadata(prog, "in", status)
    if root is None:
        return
    status.compatible_in, status.mem_map_in = root.compatible, root.mem_map_phys
    if root.subtree(KEXEC_METADATA_NAME) is None:
        status.notes.append("The previous kernel handed over no kexec-metadata blob.")
    meta = _metadata(blob, "in", status)
    if meta is None:
        return
    if not have_members:
        status.kexec_count, status.previous_release = meta.kexec_count, meta.previous_release
    elif (meta.kexec_count, meta.previous_release) != (status.kexec_count,
                                                       status.previous_release):
        status.notes.append(
            f"The incoming kexec-metadata says count {meta.kexec_count} from "
            f"{meta.previous_release!r}, but kho_in holds {status.kexec_count} from "
            f"{status.previous_release!r}: the kernel refused or never read the blob."
        )


def kho_status(prog: Program) -> KhoStatus:
    """Collect the KHO status of a kernel; only a kernel without KHO is an error.

    Everything else that cannot be read becomes ``None`` and a note.

    :raises NotKhoKernelError: the kernel has no ``kho_out``.
    """
    kho_out(prog)
    kin = kho_in(prog)
    luo_sym, luo_on, luo_num = luo_state(prog)
    boot = is_kho_boot(prog)
    status = KhoStatus(
        release=kernel_release(prog), enabled=kho_enabled(prog), kho_boot=boot, kexec_count=None,
        previous_release=None, next_kexec_count=None, compatible=None, compatible_in=None,
        luo=luo_on, liveupdate_num=luo_num, memblock_flags=memblock_flag_table(prog),
    )
    status.symbols = {
        "kho_out": _symbol(prog, KHO_OUT_SYMBOLS, KHO_SOURCE),
        "kho_in": _symbol(prog, KHO_IN_SYMBOLS, KHO_SOURCE),
        "kho_enable": _symbol(prog, KHO_ENABLE_SYMBOLS, KHO_SOURCE),
        "luo": luo_sym,
    }
    _scratch(prog, status)
    have_members = all(_in_members(kin, status))
    if boot:
        status.fdt_in_phys = _value(_member(kin, "fdt_phys"))
        _status_in(prog, status, have_members)
        status.notes.append(
            "On a KHO boot, 7.3 creates no debugfs kho/out/fdt (kho_init() returns early); "
            "`kho-inspect kho fdt --out` reads kho_out.fdt instead."
        )
    elif status.kexec_count is None:
        status.kexec_count = 0  # a cold boot is kexec number 0
    _status_out(prog, status)
    if status.enabled is False and status.fdt_out is None:
        status.notes.append("KHO is disabled: boot with kho=on.")
    if status.luo is None:
        status.notes.append("This kernel has no LUO (CONFIG_LIVEUPDATE=n).")
    if not status.memblock_flags.values:
        status.notes.append("The debug info has no enum memblock_flags.")
    return status

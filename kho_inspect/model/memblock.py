# SPDX-License-Identifier: LGPL-2.1-or-later
"""
memblock model
--------------

The ``kho_inspect.model.memblock`` module holds the memblock part of the
model: regions with their flag names and node, the ``struct memblock_type``
headers, the ``reserve_mem=`` table and the flag enum as the target names it.
Nothing here touches drgn; every class serialises to JSON and back without loss.

Flag names follow the kernel's enumerator names without their prefix
(``MEMBLOCK_KHO_SCRATCH`` becomes ``KHO_SCRATCH``). A set bit that the target's
enum does not name is kept as a hex string (``"0x100"``), never guessed.
"""

from dataclasses import field, replace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from kho_inspect.errors import NotInKernelError
from kho_inspect.frozen import frozen
from kho_inspect.ranges import Range, RangeMap, RangeSet

__all__ = (
    "FlagTable",
    "Region",
    "MemblockType",
    "ReserveMem",
    "MemblockState",
    "MEMBLOCK_TYPES",
    "flag_name",
    "type_names",
)

MEMBLOCK_TYPES = ("memory", "reserved", "physmem")


@frozen
class FlagTable:
    """Names and values of a flags enum as read from the target's debug info.

    :param values: map from enumerator name (prefix stripped) to value.
    """

    values: Mapping[str, int]

    @classmethod
    def from_enumerators(
        cls, enumerators: Iterable[Tuple[str, int]], prefix: str = ""
    ) -> "FlagTable":
        """Build a table from ``(name, value)`` pairs, stripping ``prefix``."""
        return cls(
            {
                (name[len(prefix):] if prefix and name.startswith(prefix) else name): value
                for name, value in enumerators
            }
        )

    def has(self, name: str) -> bool:
        return name in self.values

    def value(self, name: str) -> int:
        return self.values[name]

    def decode(self, value: int) -> Tuple[str, ...]:
        """Names of the bits set in ``value``, lowest bit first.

        Multi-bit or zero enumerators are ignored; a set bit without a
        single-bit enumerator is returned as a hex string.
        """
        by_bit = {v: n for n, v in self.values.items() if v and v & (v - 1) == 0}
        names = []
        bit = 1
        while bit <= value:
            if value & bit:
                names.append(by_bit.get(bit, hex(bit)))
            bit <<= 1
        return tuple(names)

    def encode(self, names: Iterable[str]) -> int:
        """The inverse of :meth:`decode`."""
        value = 0
        for name in names:
            value |= int(name, 16) if name.startswith("0x") else self.values[name]
        return value

    def to_json(self) -> Dict[str, int]:
        return dict(sorted(self.values.items(), key=lambda kv: (kv[1], kv[0])))

    @classmethod
    def from_json(cls, obj: Mapping[str, int]) -> "FlagTable":
        return cls({str(k): int(v) for k, v in obj.items()})


@frozen
class Region:
    """One ``struct memblock_region``.

    ``nid`` is ``None`` when the kernel has no ``CONFIG_NUMA`` (no ``nid``
    member) and also when the region has no valid node (``MAX_NUMNODES`` or
    ``NUMA_NO_NODE``).
    """

    base: int
    size: int
    flags: Tuple[str, ...] = ()
    nid: Optional[int] = None

    @property
    def range(self) -> Range:
        return Range(self.base, self.size)

    @property
    def end(self) -> int:
        return self.base + self.size

    def has_flag(self, name: str) -> bool:
        """Whether the region carries ``name``; ``"NONE"`` matches a region without flags."""
        return name in self.flags or (name == "NONE" and not self.flags)

    def to_json(self) -> Dict[str, Any]:
        return {"base": self.base, "size": self.size, "nid": self.nid, "flags": list(self.flags)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Region":
        nid = obj.get("nid")
        return cls(
            int(obj["base"]),
            int(obj["size"]),
            tuple(obj.get("flags", ())),
            None if nid is None else int(nid),
        )


@frozen
class MemblockType:
    """One ``struct memblock_type``: its header fields and its regions."""

    name: str
    regions: Tuple[Region, ...]
    cnt: int
    max: int
    total_size: int

    def ranges(self, flag: Optional[str] = None) -> RangeSet:
        """The set of addresses covered, optionally only regions with ``flag``."""
        return RangeSet(r.range for r in self.regions if flag is None or r.has_flag(flag))

    def region_map(self) -> RangeMap["Region"]:
        """The regions by address, for lookups (``region_map().get(addr)``).

        :raises ValueError: two regions overlap (a corrupt or stale array).
        """
        return RangeMap((r.range, r) for r in self.regions)

    def select(self, flag: Optional[str] = None) -> "MemblockType":
        """A copy with only the regions that carry ``flag`` (all if ``None``);
        the kernel's header fields (``cnt``, ``max``, ``total_size``) are kept."""
        if flag is None:
            return self
        return replace(self, regions=tuple(r for r in self.regions if r.has_flag(flag)))

    def totals(self) -> Dict[str, Tuple[int, int]]:
        """``(regions, bytes)`` for ``"all"`` and for each flag name present
        (``"NONE"`` for regions without flags)."""
        out: Dict[str, Tuple[int, int]] = {"all": (len(self.regions),
                                                   sum(r.size for r in self.regions))}
        for r in self.regions:
            for f in r.flags or ("NONE",):
                count, size = out.get(f, (0, 0))
                out[f] = (count + 1, size + r.size)
        return out

    def header_json(self) -> Dict[str, int]:
        return {"cnt": self.cnt, "max": self.max, "total_size": self.total_size}

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "regions": [r.to_json() for r in self.regions],
                **self.header_json()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "MemblockType":
        return cls.from_parts(str(obj["name"]), obj["regions"], obj)

    @classmethod
    def from_parts(cls, name: str, regions: Iterable[Mapping[str, Any]],
                   header: Optional[Mapping[str, int]] = None) -> "MemblockType":
        """A type from the parts of :meth:`MemblockState.to_json`: its name, its
        regions' JSON and its header (``cnt``, ``max``, ``total_size``; taken
        from the regions where missing)."""
        regs = tuple(Region.from_json(r) for r in regions)
        header = header or {}
        return cls(
            name,
            regs,
            int(header.get("cnt", len(regs))),
            int(header.get("max", len(regs))),
            int(header.get("total_size", sum(r.size for r in regs))),
        )


@frozen
class ReserveMem:
    """One ``reserve_mem=`` entry of ``reserved_mem_table``."""

    name: str
    start: int
    size: int

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "start": self.start, "size": self.size}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ReserveMem":
        return cls(str(obj["name"]), int(obj["start"]), int(obj["size"]))


@frozen
class MemblockState:
    """Everything ``kho-inspect memblock`` reports about one kernel.

    ``types`` maps ``"memory"``, ``"reserved"`` and (where the kernel has it)
    ``"physmem"`` to their :class:`MemblockType`. ``stale`` is true when the
    arrays were read although memblock was discarded (``--allow-stale``);
    ``stale_reason`` then says why they cannot be trusted.
    """

    types: Mapping[str, MemblockType]
    flags: FlagTable
    stale: bool = False
    stale_reason: Optional[str] = None
    reserve_mem: Tuple[ReserveMem, ...] = ()
    bottom_up: Optional[bool] = None
    current_limit: Optional[int] = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def memory(self) -> MemblockType:
        return self.types["memory"]

    def select(self, types: Optional[Iterable[str]] = None,
               flag: Optional[str] = None) -> "MemblockState":
        """A copy with only ``types`` (all if ``None``), each holding only the
        regions that carry ``flag`` (``"NONE"``: regions without flags).

        :raises KeyError: a type this state does not have.
        """
        names = list(self.types) if types is None else list(types)
        return replace(self, types={n: self.types[n].select(flag) for n in names})

    @property
    def reserved(self) -> MemblockType:
        return self.types["reserved"]

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for name, t in self.types.items():
            out[name] = [r.to_json() for r in t.regions]
        out["flags"] = self.flags.to_json()
        out["stale"] = self.stale
        out["stale_reason"] = self.stale_reason
        out["types"] = {name: t.header_json() for name, t in self.types.items()}
        out["reserve_mem"] = [r.to_json() for r in self.reserve_mem]
        out["bottom_up"] = self.bottom_up
        out["current_limit"] = self.current_limit
        out["totals"] = self.totals()
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "MemblockState":
        headers = obj.get("types", {})
        names = [n for n in MEMBLOCK_TYPES if n in obj] + [
            n for n in headers if n not in MEMBLOCK_TYPES and n in obj
        ]
        return cls(
            types={n: MemblockType.from_parts(n, obj[n], headers.get(n)) for n in names},
            flags=FlagTable.from_json(obj.get("flags", {})),
            stale=bool(obj.get("stale", False)),
            stale_reason=obj.get("stale_reason"),
            reserve_mem=tuple(ReserveMem.from_json(r) for r in obj.get("reserve_mem", ())),
            bottom_up=obj.get("bottom_up"),
            current_limit=obj.get("current_limit"),
            extra=dict(obj.get("extra", {})),
        )

    def totals(self) -> Dict[str, Dict[str, int]]:
        """Bytes per type, and per flag name within each type."""
        return {name: {key: size for key, (_, size) in t.totals().items()}
                for name, t in self.types.items()}


def flag_name(flags: FlagTable, given: str) -> str:
    """The flag name ``given`` means for this kernel (case and a ``MEMBLOCK_``
    prefix ignored; a single bit in hex is accepted and named if the enum
    names it); ``"NONE"`` stands for regions without flags.

    :raises NotInKernelError: the kernel has no such flag (``available``: its flags).
    """
    name = given.strip().upper()
    name = name[len("MEMBLOCK_"):] if name.startswith("MEMBLOCK_") else name
    if name == "NONE" or flags.has(name):
        return name
    try:
        value = int(name, 16) if name.startswith("0X") else 0
    except ValueError:
        value = 0
    if value and value & (value - 1) == 0:
        return flags.decode(value)[0]
    known = list(flags.to_json())
    advice = ("its flags are {available}" if known else
              "its flags are none (its debug info lacks enum memblock_flags)")
    raise NotInKernelError(
        f"This kernel's enum memblock_flags has no flag {given!r}",
        advice + " (give a bit it does not name in hex, such as 0x100)",
        given="flag", name=given, available=known,
    )


def type_names(state: MemblockState, choice: str) -> List[str]:
    """The memblock types ``choice`` means: one of ``state.types``, or ``"all"``.

    :raises NotInKernelError: the kernel has no such type (``physmem`` outside s390).
    """
    if choice == "all":
        return list(state.types)
    if choice not in state.types:
        raise NotInKernelError(
            f"This kernel has no {choice} (it needs CONFIG_HAVE_MEMBLOCK_PHYS_MAP, which only "
            "s390 selects)",
            "use {given} " + ", ".join(state.types) + " or all",
            given="types", name=choice, available=list(state.types),
        )
    return [choice]

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Memblock
--------

The ``kho_inspect.memblock`` module reads the state of the boot-time memory
allocator (mm/memblock.c, include/linux/memblock.h):

* ``struct memblock memblock``: ``bottom_up``, ``current_limit`` and two
  ``struct memblock_type``: ``memory`` (the RAM the kernel knows about) and
  ``reserved`` (what was allocated or set aside during boot);
* ``struct memblock_type physmem``: the physical memory before ``mem=``
  limits, only with ``CONFIG_HAVE_MEMBLOCK_PHYS_MAP`` (s390);
* ``reserved_mem_table[]`` and ``reserved_mem_count``: the ``reserve_mem=``
  regions.

Each region array is read with one ``prog.read()`` and decoded with the
offsets and sizes of ``struct memblock_region`` from the target's debug info
(:class:`kho_inspect.records.RecordLayout`). Flag names come from ``enum
memblock_flags`` (:func:`memblock_flag_table`), never from values: ``0x80`` is
``RSRV_HUGETLB`` in Linux 7.3 (Linux kernel commit 7d163a75f821 ("memblock:
make HugeTLB bootmem allocation work with KHO") (in v7.3)) and
``KHO_SCRATCH_EXT`` in the v1 series (Message-ID
20260429133928.850721-1-pratyush@kernel.org, patch 09/12, not merged); see
docs/kernel/series.md.

Without ``CONFIG_ARCH_KEEP_MEMBLOCK`` (x86 gets it only with
``CONFIG_INTEL_TDX_HOST``) the kernel stops maintaining memblock after boot:
``memblock_discard()`` frees grown arrays and sets ``memblock_memory`` to
NULL, and without ``CONFIG_MEMORY_HOTPLUG`` the struct and its static arrays
live in init memory that ``free_initmem()`` releases. :func:`read_memblock`
detects that (and arrays that are plainly corrupt) and refuses with
:class:`~kho_inspect.errors.StaleMemblockError`, unless asked to return the
arrays marked stale.
"""

from typing import Dict, Iterable, List, NamedTuple, NoReturn, Optional, Sequence, Tuple

import drgn
from drgn import Object, Program

from kho_inspect.errors import DebugInfoError, MemoryReadError, StaleMemblockError
from kho_inspect.model import FlagTable, MemblockState, MemblockType, Region, ReserveMem
from kho_inspect.ranges import Range
from kho_inspect.records import RecordLayout, read_records
from kho_inspect.target import byteorder, find_variable

__all__ = (
    "MEMBLOCK_SOURCE",
    "INIT_REGIONS",
    "MAX_REGIONS",
    "memblock_flag_table",
    "node_limit",
    "region_layout",
    "memblock_discarded",
    "read_reserve_mem",
    "read_memblock",
)

MEMBLOCK_SOURCE = "memblock.c"

INIT_REGIONS = {
    "memory": "memblock_memory_init_regions",
    "reserved": "memblock_reserved_init_regions",
}
"""The static (``__initdata_memblock``) arrays each type starts in."""

MAX_REGIONS = 1 << 20
"""More regions than any kernel has; a larger ``cnt`` or ``max`` is garbage."""

_DISCARDED_ADVICE = (
    "inspect a kernel that keeps memblock (CONFIG_ARCH_KEEP_MEMBLOCK, which x86 gets with "
    "CONFIG_INTEL_TDX_HOST) or a vmcore taken during boot, or pass {alternatives} to see the "
    "arrays as they were left"
)
_CORRUPT_ADVICE = (
    "check that the debug info ({vmlinux}) belongs to this kernel, or pass {alternatives} to "
    "see the arrays anyway"
)


def memblock_flag_table(prog: Program) -> FlagTable:
    """``enum memblock_flags`` as a :class:`~kho_inspect.model.FlagTable`, names
    without their ``MEMBLOCK_`` prefix.

    An empty table when the kernel's debug info has no such enum.
    """
    try:
        enum = prog.type("enum memblock_flags")
    except LookupError:
        return FlagTable({})
    return FlagTable.from_enumerators(((e.name, e.value) for e in enum.enumerators or ()),
                                      "MEMBLOCK_")


def node_limit(prog: Program) -> int:
    """The first node id that is not a node: ``nr_node_ids``.

    Regions without a node hold ``MAX_NUMNODES`` (``memblock_add()``) or
    ``NUMA_NO_NODE`` (-1); both fall outside ``[0, nr_node_ids)``. A kernel
    with ``MAX_NUMNODES == 1`` has no variable and defines ``nr_node_ids`` as 1.
    """
    try:
        return prog["nr_node_ids"].value_()
    except (LookupError, drgn.FaultError, drgn.ObjectAbsentError):
        return 1


def region_layout(prog: Program) -> RecordLayout:
    """``struct memblock_region`` as ``(base, size, flags[, nid])`` records.

    ``nid`` exists only with ``CONFIG_NUMA``.
    """
    t = prog.type("struct memblock_region")
    members = ("base", "size", "flags") + (("nid",) if t.has_member("nid") else ())
    return RecordLayout(t, members, byteorder(prog))


class _RegionDecoder:
    # Region records -> model Regions; flag names decoded once per value.

    def __init__(self, layout: RecordLayout, flags: FlagTable, nodes: int) -> None:
        self.layout = layout
        self.flags = flags
        self.nodes = nodes
        self._names: Dict[int, Tuple[str, ...]] = {}

    def _flag_names(self, value: int) -> Tuple[str, ...]:
        if value not in self._names:
            self._names[value] = self.flags.decode(value)
        return self._names[value]

    def regions(self, records: Iterable[Sequence[int]]) -> Tuple[Region, ...]:
        out = []
        for base, size, flags, *nid in records:
            # Without CONFIG_NUMA there is no memblock_region.nid and
            # memblock_get_region_node() is 0 for every region (include/linux/memblock.h).
            node = (nid[0] if 0 <= nid[0] < self.nodes else None) if nid else 0
            out.append(Region(base, size, self._flag_names(flags), node))
        return tuple(out)


class _Header(NamedTuple):
    # One struct memblock_type as read: where its array is and how big.
    name: str
    symbol: str
    regions: int
    cnt: int
    max: int
    total_size: int

    @classmethod
    def of(cls, obj: Object, name: str, symbol: str) -> "_Header":
        return cls(name, symbol, obj.regions.value_(), obj.cnt.value_(), obj.max.value_(),
                   obj.total_size.value_())

    def problems(self) -> List[str]:
        if not self.regions:
            return [f"{self.symbol}.regions is NULL"]
        if self.cnt > MAX_REGIONS or self.max > MAX_REGIONS:
            return [f"{self.symbol} claims {self.cnt} of {self.max} regions, more than any "
                    "kernel has"]
        if self.cnt > self.max:
            return [f"{self.symbol}.cnt {self.cnt} exceeds its max {self.max}"]
        return []

    def empty(self) -> MemblockType:
        return MemblockType(self.name, (), self.cnt, self.max, self.total_size)


def _content_problems(header: _Header, regions: Sequence[Region]) -> List[str]:
    # memblock keeps each array sorted and disjoint (memblock_add_range(),
    # memblock_merge_regions()).
    if any(b.base < a.end for a, b in zip(regions, regions[1:])):
        return [f"{header.symbol} regions overlap or are out of order"]
    return []


def total_size_note(mtype: MemblockType, symbol: str) -> Optional[str]:
    """Why ``total_size`` may differ from the sum of the regions, when it does.

    Not a sign of corruption: memblock_trim_memory() (mm/memblock.c, called by
    x86's e820__memblock_setup()) rounds regions in place without updating
    ``total_size``; seen on the lab's Linux 7.3 guest (0xc00 bytes).
    """
    total = sum(r.size for r in mtype.regions)
    if not mtype.regions or total == mtype.total_size:
        return None
    return (f"{symbol}.total_size {mtype.total_size:#x} differs from the sum of its regions "
            f"{total:#x} by {mtype.total_size - total:#x} (memblock_trim_memory() rounds "
            "regions without updating it)")


# --- was memblock discarded? ------------------------------------------------


def _init_section(prog: Program) -> Optional[Range]:
    # [__init_begin, __init_end): linker symbols, so from the symbol table.
    try:
        start = prog.symbol("__init_begin").address
        end = prog.symbol("__init_end").address
    except LookupError:
        return None
    return Range.from_bounds(start, end) if end > start else None


def _in_init_section(prog: Program, address: Optional[int]) -> bool:
    section = _init_section(prog)
    return section is not None and address is not None and address in section


def _has_code(prog: Program, function: str) -> bool:
    try:
        fn = prog.function(function)
    except LookupError:
        return False
    return not fn.absent_ and fn.address_ is not None


def memblock_discarded(prog: Program, memblock_address: Optional[int]) -> Optional[str]:
    """Why the kernel no longer maintains memblock, or ``None`` if it does.

    :param memblock_address: the address of ``struct memblock memblock``.
    """
    try:
        # static struct memblock_type *memblock_memory = &memblock.memory;
        # memblock_discard() sets it to NULL. With ARCH_KEEP_MEMBLOCK,
        # memblock_discard() is an empty inline and it stays set.
        # The compiler may fold it into a constant (a DWARF stack value) or
        # drop its location where nothing writes it (an absent object).
        pointer = find_variable(prog, ("memblock_memory",), MEMBLOCK_SOURCE)[1].value_()
    except (LookupError, drgn.FaultError, drgn.ObjectAbsentError):
        pointer = None
    if pointer:  # also a vmcore taken during boot, before page_alloc_init_late()
        return None
    if _in_init_section(prog, memblock_address):
        return ("struct memblock is in the init section that free_initmem() released after "
                "boot, as on kernels without CONFIG_ARCH_KEEP_MEMBLOCK and CONFIG_MEMORY_HOTPLUG")
    if pointer == 0:
        return ("memblock_discard() set memblock_memory to NULL after boot, as kernels without "
                "CONFIG_ARCH_KEEP_MEMBLOCK do")
    if _has_code(prog, "memblock_discard"):
        # A kernel without memblock_memory: an out-of-line memblock_discard()
        # still says that it throws memblock away after boot.
        return ("this kernel has a real memblock_discard(), so it lacks "
                "CONFIG_ARCH_KEEP_MEMBLOCK and discards memblock after boot")
    return None


def _init_array(prog: Program, header: _Header) -> Optional[int]:
    try:
        name = INIT_REGIONS[header.name]
        return find_variable(prog, (name,), MEMBLOCK_SOURCE)[1].address_
    except LookupError:
        return None


def _discarded_arrays(prog: Program, headers: Sequence[_Header]) -> List[str]:
    # What discarded memory/reserved arrays still hold: the static arrays stay
    # as boot left them, grown ones were freed (docs/kernel/memblock.md#discarded-after-boot).
    kept = [h for h in headers if h.name in INIT_REGIONS and h.regions]
    frozen = [h.symbol for h in kept if h.regions == _init_array(prog, h)]
    out = []
    if frozen:
        whose = "their static arrays" if len(frozen) > 1 else "its static array"
        out.append(f"{' and '.join(frozen)} still use {whose}, frozen as boot left them")
    out += [f"{h.symbol}.regions points at {h.regions:#x}, a grown array that "
            "memblock_discard() freed" for h in kept if h.symbol not in frozen]
    return out


def _header_reasons(prog: Program, headers: Sequence[_Header], discarded: Optional[str],
                    freed: bool) -> List[str]:
    if freed:  # struct memblock itself is garbage: nothing else is worth saying
        return [discarded] if discarded else []
    reasons = [discarded, *_discarded_arrays(prog, headers)] if discarded else []
    return reasons + [p for h in headers for p in h.problems()]


def _refuse(reasons: Sequence[str], discarded: bool) -> NoReturn:
    advice = _DISCARDED_ADVICE if discarded else _CORRUPT_ADVICE
    raise StaleMemblockError(f"memblock cannot be trusted ({'; '.join(reasons)})", advice,
                             alternatives=("allow_stale",))


# --- reading ----------------------------------------------------------------


def _memblock_variable(prog: Program) -> Object:
    try:
        return find_variable(prog, ("memblock",), MEMBLOCK_SOURCE)[1]
    except LookupError as e:
        raise DebugInfoError(
            "The debug info has no variable memblock (struct memblock)",
            "pass a vmlinux with complete DWARF for this kernel with {vmlinux}",
        ) from e


def _read_struct(prog: Program, memblock: Object) -> Object:
    try:
        return memblock.read_()
    except drgn.FaultError as e:
        if _in_init_section(prog, memblock.address_):
            raise StaleMemblockError(
                f"memblock cannot be read: struct memblock at {memblock.address_:#x} is in the "
                "init section that this kernel freed and unmapped after boot, as kernels "
                "without CONFIG_ARCH_KEEP_MEMBLOCK and CONFIG_MEMORY_HOTPLUG do, so only a "
                "kernel that keeps memblock or a vmcore taken during boot can show it."
            ) from e
        raise MemoryReadError(
            f"struct memblock at {memblock.address_:#x} cannot be read ({e.message})",
            "the dump lacks that page or the debug info ({vmlinux}) belongs to another kernel",
        ) from e


def _physmem_header(prog: Program, memblock: Object) -> Optional[_Header]:
    # CONFIG_HAVE_MEMBLOCK_PHYS_MAP: a global in 7.3; older kernels had it as
    # a member of struct memblock (docs/kernel/history.md#physmem).
    try:
        return _Header.of(find_variable(prog, ("physmem",), MEMBLOCK_SOURCE)[1].read_(),
                          "physmem", "physmem")
    except LookupError:
        pass
    except drgn.FaultError as e:
        raise MemoryReadError(f"physmem cannot be read ({e.message}).") from e
    try:
        return _Header.of(memblock.member_("physmem"), "physmem", "memblock.physmem")
    except LookupError:
        return None


def _read_type(prog: Program, header: _Header, decoder: _RegionDecoder,
               garbage: bool) -> Tuple[MemblockType, List[str]]:
    # One bulk read of regions[0:cnt]; problems say why it cannot be trusted.
    if garbage or header.problems():
        return header.empty(), []
    try:
        records = read_records(prog, header.regions, header.cnt, decoder.layout)
    except drgn.FaultError:
        return header.empty(), [f"{header.symbol}.regions at {header.regions:#x} cannot be read"]
    regions = decoder.regions(records)
    return (MemblockType(header.name, regions, header.cnt, header.max, header.total_size),
            _content_problems(header, regions))


def read_reserve_mem(prog: Program) -> Tuple[ReserveMem, ...]:
    """The ``reserve_mem=`` regions: ``reserved_mem_table[:reserved_mem_count]``.

    ``struct reserve_mem_table {char name[16]; phys_addr_t start; phys_addr_t
    size;}`` (mm/memblock.c). Released entries (size 0) are skipped, as the
    debugfs file ``memblock/reserve_mem_param`` does. Empty when the kernel
    has no table.

    :raises MemoryReadError: the table cannot be read.
    """
    try:
        table = find_variable(prog, ("reserved_mem_table",), MEMBLOCK_SOURCE)[1]
        count = find_variable(prog, ("reserved_mem_count",), MEMBLOCK_SOURCE)[1].value_()
        if table.address_ is None:
            return ()
        layout = RecordLayout(table.type_.type, ("name", "start", "size"), byteorder(prog))
        records = read_records(prog, table.address_, min(count, table.type_.length or 0), layout)
    except (LookupError, drgn.ObjectAbsentError):
        return ()
    except drgn.FaultError as e:
        raise MemoryReadError(f"reserved_mem_table cannot be read ({e.message}).") from e
    return tuple(
        ReserveMem(name.split(b"\0", 1)[0].decode(errors="replace"), start, size)
        for name, start, size in records if size
    )


def read_memblock(prog: Program, allow_stale: bool = False) -> MemblockState:
    """Read ``memblock``, ``physmem`` and the ``reserve_mem=`` table.

    :param allow_stale: return arrays that cannot be trusted (memblock
        discarded after boot, or corrupt) with ``stale=True`` and the reason,
        instead of refusing.
    :raises StaleMemblockError: the arrays cannot be trusted (and not
        ``allow_stale``), or ``struct memblock`` is in freed init memory.
    :raises MemoryReadError: ``struct memblock`` or the ``reserve_mem=``
        table cannot be read.
    :raises DebugInfoError: the debug info has no ``memblock``.
    """
    memblock = _memblock_variable(prog)
    value = _read_struct(prog, memblock)
    headers = [_Header.of(value.memory, "memory", "memblock.memory"),
               _Header.of(value.reserved, "reserved", "memblock.reserved")]
    physmem = _physmem_header(prog, value)
    headers += [physmem] if physmem is not None else []

    discarded = memblock_discarded(prog, memblock.address_)
    freed = discarded is not None and _in_init_section(prog, memblock.address_)
    reasons = _header_reasons(prog, headers, discarded, freed)
    if reasons and not allow_stale:
        _refuse(reasons, bool(discarded))

    decoder = _RegionDecoder(region_layout(prog), memblock_flag_table(prog), node_limit(prog))
    types: Dict[str, MemblockType] = {}
    for header in headers:
        # physmem is ordinary data: freeing init memory does not touch it.
        garbage = freed and header.name in INIT_REGIONS
        types[header.name], problems = _read_type(prog, header, decoder, garbage)
        reasons += problems
    if reasons and not allow_stale:
        _refuse(reasons, bool(discarded))

    notes = [n for h in headers if (n := total_size_note(types[h.name], h.symbol))]
    return MemblockState(
        types=types,
        flags=decoder.flags,
        stale=bool(reasons),
        stale_reason="; ".join(reasons) or None,
        reserve_mem=read_reserve_mem(prog),
        bottom_up=bool(value.bottom_up.value_()),
        current_limit=value.current_limit.value_(),
        extra={"notes": notes} if notes else {},
    )

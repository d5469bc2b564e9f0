"""
KHO scratch
-----------

The ``kho_inspect.scratch`` module reports the KHO scratch areas
(``kho_scratch[:kho_scratch_cnt]``), the memory regions flagged for scratch,
and the classes derived from them:

* **original**: the array itself. ``kho_reserve_scratch()`` fills it on a cold
  boot (kernel/liveupdate/kexec_handover.c): index 0 is the lowmem area, 1 the
  global area, and ``2 + k`` the area of the k-th node of
  ``node_states[N_MEMORY]`` (``for_each_node_state(nid, N_MEMORY)``). Later
  kernels of a kexec chain inherit it unchanged from ``kho_in.scratch_phys``.
  Its pageblocks are ``MIGRATE_CMA``.
* **extended**: memory usable for early boot allocations beyond the array.
  Linux 7.3's ``kho_extend_scratch()`` marks the 1 GiB blocks that hold no
  preserved memory with the plain ``MEMBLOCK_KHO_SCRATCH`` flag, so there it
  is the ``KHO_SCRATCH``-flagged memory minus the array. It must not be CMA.
* **unpreserved**: only on kernels whose ``enum memblock_flags`` has a
  separate flag for that memory (``MEMBLOCK_KHO_SCRATCH_EXT`` in the v1
  series, ``MEMBLOCK_KHO_UNPRESERVED`` later): the regions with that flag. On
  such kernels ``KHO_SCRATCH`` marks only the array, so *extended* is the
  unpreserved memory minus the array (the two are disjoint by design; any
  overlap is reported).

Decisions are made by enumerator *names* (through
:class:`~kho_inspect.model.FlagTable`) and symbol names from lists of known
spellings (the "scratch" to "bootmem" rename), never by values or versions.

The operator view says, per node and in total, how much RAM the original
areas hold, what share of RAM (``memblock.memory``) that is, and how much of it
is in use: the free part is the intersection of each area with the free
blocks on the ``MIGRATE_CMA`` buddy free lists of every zone, so it is exact
per area; pages cached on per-CPU lists count as in use. ``zone->cma_pages``
and the ``NR_FREE_CMA_PAGES`` counters are reported beside it: they cover all
CMA (``cma=``, hugetlb CMA too), not only scratch.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import drgn
from drgn import Program, offsetof, sizeof
from drgn.helpers.linux.mm import pfn_to_page, totalram_pages
from drgn.helpers.linux.mmzone import for_each_online_pgdat
from drgn.helpers.linux.nodemask import for_each_node_state
from drgn.helpers.linux.vmstat import zone_page_state

from kho_inspect.errors import (
    CorruptTreeError,
    DebugInfoError,
    MemoryReadError,
    NotKhoKernelError,
    StaleMemblockError,
)
from kho_inspect.memblock import memblock_flag_table, read_memblock
from kho_inspect.model import FlagTable, MemblockState, Region
from kho_inspect.pageblock import (
    PageblockLayout,
    PageblockRun,
    SectionUsemaps,
    merge_runs,
    migratetype_bytes,
    pageblock_layout,
)
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "CLASSES",
    "SCRATCH_FLAGS",
    "SCRATCH_SYMBOLS",
    "UNPRESERVED_FLAGS",
    "CmaUsage",
    "NodeUse",
    "ScratchArea",
    "ScratchClasses",
    "ScratchReport",
    "area_roles",
    "build_report",
    "classify",
    "find_scratch_symbols",
    "memory_nodes",
    "node_use",
    "read_cma_usage",
    "read_scratch_areas",
    "scratch_report",
)

SCRATCH_SYMBOLS: Tuple[Tuple[str, str], ...] = (
    ("kho_scratch", "kho_scratch_cnt"),
    # "Rename KHO scratch to KHO boot memory" (kexec list, Pratyush Yadav).
    ("kho_bootmem", "kho_bootmem_cnt"),
)
"""Known spellings of the array and its count, newest last."""

SCRATCH_FLAGS: Tuple[str, ...] = ("KHO_SCRATCH", "KHO_BOOTMEM")
"""Known names (prefix stripped) of the memblock flag on scratch memory."""

UNPRESERVED_FLAGS: Tuple[str, ...] = ("KHO_UNPRESERVED", "KHO_SCRATCH_EXT")
"""Known names of a separate flag for extended scratch, preferred first."""

CLASSES = ("original", "extended", "unpreserved")

_MAX_AREAS = 4096 + 2  # MAX_NUMNODES (NODES_SHIFT <= 12) + lowmem + global


# --- pure -------------------------------------------------------------------


@dataclass(frozen=True)
class ScratchArea:
    """One ``struct kho_scratch`` with the role its index gives it.

    :param role: ``"lowmem"``, ``"global"``, ``"node N"`` (or ``"node ?"``
        when ``N_MEMORY`` has fewer nodes than the array has node areas).
    :param node: N of a node area, else ``None``.
    :param nids: nodes of the ``memblock.memory`` regions under the area.
    """

    index: int
    addr: int
    size: int
    role: str
    node: Optional[int] = None
    nids: Tuple[Optional[int], ...] = ()

    @property
    def range(self) -> Range:
        return Range(self.addr, self.size)

    def to_json(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "addr": self.addr,
            "size": self.size,
            "role": self.role,
            "node": self.node,
            "memblock_nids": list(self.nids),
        }


def area_roles(count: int, nodes: Sequence[int]) -> List[Tuple[str, Optional[int]]]:
    """``(role, node)`` of each index of a ``count``-entry scratch array.

    ``kho_reserve_scratch()``: ``[0]`` lowmem, ``[1]`` global, ``[2 + k]`` the
    k-th node of ``node_states[N_MEMORY]`` in ascending node order.

    >>> area_roles(4, [0, 3])
    [('lowmem', None), ('global', None), ('node 0', 0), ('node 3', 3)]

    :param nodes: the nodes of ``N_MEMORY``, ascending.
    """
    roles: List[Tuple[str, Optional[int]]] = []
    for i in range(count):
        if i < 2:
            roles.append((("lowmem", "global")[i], None))
        elif i - 2 < len(nodes):
            roles.append((f"node {nodes[i - 2]}", nodes[i - 2]))
        else:
            roles.append(("node ?", None))
    return roles


def _nids_under(rng: Range, memory: Sequence[Region]) -> Tuple[Optional[int], ...]:
    nids: List[Optional[int]] = []
    for region in memory:
        if region.range.overlaps(rng) and region.nid not in nids:
            nids.append(region.nid)
    return tuple(nids)


def first_flag(flags: FlagTable, names: Sequence[str]) -> Optional[str]:
    """The first of ``names`` that the kernel's flag enum has."""
    return next((n for n in names if flags.has(n)), None)


@dataclass(frozen=True)
class ScratchClasses:
    """The derived scratch classes (see the module documentation).

    :param flagged: memory with the scratch flag (``scratch_flag``).
    :param scratch_flag: name of the scratch flag, ``None`` if the kernel has none.
    :param unpreserved_flag: name of the separate flag, ``None`` on 7.3.
    :param overlap: unpreserved memory that is also original scratch
        (should be empty).
    """

    original: RangeSet
    extended: RangeSet
    unpreserved: RangeSet
    flagged: RangeSet
    scratch_flag: Optional[str]
    unpreserved_flag: Optional[str]
    overlap: RangeSet = field(default_factory=RangeSet)

    def get(self, name: str) -> RangeSet:
        return {"original": self.original, "extended": self.extended,
                "unpreserved": self.unpreserved}[name]

    @property
    def extended_rule(self) -> str:
        """How *extended* was derived, in words."""
        if self.unpreserved_flag:
            return f"{self.unpreserved_flag}-flagged memory minus the scratch array"
        if self.scratch_flag:
            return f"{self.scratch_flag}-flagged memory minus the scratch array (Linux 7.3)"
        return "none: the kernel has no scratch memblock flag"


def classify(original: RangeSet, memory: Iterable[Region], flags: FlagTable) -> ScratchClasses:
    """Derive the scratch classes from the array and ``memblock.memory``.

    :param original: the ``kho_scratch[]`` ranges.
    :param memory: the ``memblock.memory`` regions.
    :param flags: the kernel's ``enum memblock_flags``.
    """
    memory = list(memory)
    scratch_flag = first_flag(flags, SCRATCH_FLAGS)
    unpreserved_flag = first_flag(flags, UNPRESERVED_FLAGS)
    flagged = RangeSet(r.range for r in memory if scratch_flag and scratch_flag in r.flags)
    if unpreserved_flag is None:
        # Linux 7.3: kho_extend_scratch() marks with MEMBLOCK_KHO_SCRATCH.
        unpreserved = RangeSet()
        extended = flagged - original
    else:
        unpreserved = RangeSet(r.range for r in memory if unpreserved_flag in r.flags)
        extended = unpreserved - original
    return ScratchClasses(
        original=original,
        extended=extended,
        unpreserved=unpreserved,
        flagged=flagged,
        scratch_flag=scratch_flag,
        unpreserved_flag=unpreserved_flag,
        overlap=unpreserved & original,
    )


def flagged_regions(memory: Iterable[Region], classes: ScratchClasses) -> List[Region]:
    """The ``memblock.memory`` regions with the scratch or the unpreserved flag."""
    names = {n for n in (classes.scratch_flag, classes.unpreserved_flag) if n}
    return [r for r in memory if names.intersection(r.flags)]


@dataclass(frozen=True)
class CmaUsage:
    """Free ``MIGRATE_CMA`` memory as the buddy allocator sees it.

    :param free: free blocks on the ``MIGRATE_CMA`` free lists of all zones.
    :param cma_total: node -> bytes of ``zone->cma_pages``, summed over zones.
    :param cma_free: node -> bytes of ``NR_FREE_CMA_PAGES``, summed over zones.
    :param notes: what could not be read, and races seen.
    """

    free: Optional[RangeSet]
    cma_total: Mapping[Optional[int], int] = field(default_factory=dict)
    cma_free: Mapping[Optional[int], int] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeUse:
    """What scratch costs on one node (``node`` ``None``: regions without a node)."""

    node: Optional[int]
    ram: int
    original: int
    extended: int
    unpreserved: int
    free: Optional[int]

    @property
    def used(self) -> Optional[int]:
        return None if self.free is None else self.original - self.free

    @property
    def share(self) -> Optional[float]:
        """Original scratch as a fraction of the node's RAM."""
        return self.original / self.ram if self.ram else None

    def to_json(self) -> Dict[str, Any]:
        return {
            "node": self.node,
            "ram": self.ram,
            "original": self.original,
            "extended": self.extended,
            "unpreserved": self.unpreserved,
            "share": self.share,
            "free": self.free,
            "used": self.used,
        }


def node_use(classes: ScratchClasses, memory: Sequence[Region], free: Optional[RangeSet],
             ram_total: Optional[int] = None) -> Tuple[List[NodeUse], NodeUse]:
    """Per-node and total cost of scratch: RAM, class sizes, free and used.

    A node's memory is the ``memblock.memory`` regions with that ``nid``.
    Without regions (memblock unreadable) there are no node rows, and the
    total takes its RAM from ``ram_total``.
    """
    if not memory:
        free_bytes = None if free is None else (free & classes.original).total
        return [], NodeUse(None, ram_total or 0, classes.original.total, 0, 0, free_bytes)
    by_node: Dict[Optional[int], List[Range]] = {}
    for region in memory:
        by_node.setdefault(region.nid, []).append(region.range)
    rows = [_use(nid, RangeSet(ranges), classes, free)
            for nid, ranges in sorted(by_node.items(), key=lambda kv: (kv[0] is None, kv[0]))]
    total = _use(None, RangeSet(r.range for r in memory), classes, free)
    return rows, total


def _use(node: Optional[int], mem: RangeSet, classes: ScratchClasses,
         free: Optional[RangeSet]) -> NodeUse:
    original = classes.original & mem
    return NodeUse(
        node=node,
        ram=mem.total,
        original=original.total,
        extended=(classes.extended & mem).total,
        unpreserved=(classes.unpreserved & mem).total,
        free=None if free is None else (free & original).total,
    )


@dataclass(frozen=True)
class ScratchReport:
    """Everything ``kho-inspect kho scratch`` shows.

    :param symbols: the names found for the array and its count.
    :param runs: class -> migratetype runs (empty if unreadable).
    :param totalram: ``totalram_pages()`` in bytes, if read.
    """

    symbols: Tuple[str, str]
    areas: Tuple[ScratchArea, ...]
    flagged: Tuple[Region, ...]
    classes: ScratchClasses
    runs: Mapping[str, Tuple[PageblockRun, ...]]
    layout: Optional[PageblockLayout]
    nodes: Tuple[NodeUse, ...]
    total: NodeUse
    usage: CmaUsage
    totalram: Optional[int] = None
    notes: Tuple[str, ...] = ()
    kho_boot: Optional[bool] = None
    memblock_error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        c = self.classes
        return {
            "symbols": {"array": self.symbols[0], "count": self.symbols[1]},
            "kho_boot": self.kho_boot,
            "memblock": {"available": self.memblock_error is None, "error": self.memblock_error},
            "areas": [a.to_json() for a in self.areas],
            "flagged": [r.to_json() for r in self.flagged],
            "flags": {"scratch": c.scratch_flag, "unpreserved": c.unpreserved_flag},
            "extended_rule": c.extended_rule,
            "classes": {name: c.get(name).to_json() for name in CLASSES},
            "class_bytes": {name: c.get(name).total for name in CLASSES},
            "migratetype": self._migratetype_json(),
            "nodes": [n.to_json() for n in self.nodes],
            "total": self.total.to_json(),
            "ram": {"memblock_memory": None if self.memblock_error else self.total.ram,
                    "totalram": self.totalram},
            "cma": {
                "method": "free_lists" if self.usage.free is not None else None,
                "zone_cma_pages": _node_json(self.usage.cma_total),
                "nr_free_cma_pages": _node_json(self.usage.cma_free),
            },
            "notes": list(self.notes),
        }

    def _migratetype_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"layout": self.layout.to_json() if self.layout else None}
        for name in CLASSES:
            runs = self.runs.get(name, ())
            out[name] = {"bytes": migratetype_bytes(runs), "runs": [r.to_json() for r in runs]}
        return out


def _node_json(values: Mapping[Optional[int], int]) -> Dict[str, int]:
    return {("-" if k is None else str(k)): v for k, v in sorted(
        values.items(), key=lambda kv: (kv[0] is None, kv[0]))}


def check_notes(classes: ScratchClasses, runs: Mapping[str, Sequence[PageblockRun]],
                areas: Sequence[ScratchArea]) -> List[str]:
    """Plain-language notes on what looks wrong (kernel-notes F2-F4)."""
    notes = []
    if classes.overlap:
        notes.append(f"{classes.unpreserved_flag} memory overlaps the scratch array at "
                     f"{', '.join(map(str, classes.overlap))}; the two should be disjoint.")
    not_cma = [r for r in runs.get("original", ()) if r.migratetype != "CMA"]
    if not_cma:
        notes.append(f"{_bytes_of(not_cma)} bytes of original scratch are not MIGRATE_CMA "
                     f"(first at {not_cma[0].base:#x}, {not_cma[0].migratetype}).")
    for name in ("extended", "unpreserved"):
        cma = [r for r in runs.get(name, ()) if r.migratetype == "CMA"]
        if cma:
            notes.append(f"{_bytes_of(cma)} bytes of {name} scratch are MIGRATE_CMA "
                         f"(first at {cma[0].base:#x}); it may hold unmovable data and must "
                         "not be.")
    for area in areas:
        if area.node is not None and area.nids and area.nids != (area.node,):
            notes.append(f"kho_scratch[{area.index}] is the area of node {area.node} by its "
                         f"index but lies on memblock node(s) {list(area.nids)}.")
    return notes


def _bytes_of(runs: Iterable[PageblockRun]) -> int:
    return sum(r.size for r in runs)


def build_report(
    symbols: Tuple[str, str],
    array: Sequence[Range],
    nodes: Sequence[int],
    memblock: Optional[MemblockState],
    classes: ScratchClasses,
    runs: Mapping[str, Sequence[PageblockRun]],
    layout: Optional[PageblockLayout],
    usage: CmaUsage,
    totalram: Optional[int] = None,
    notes: Sequence[str] = (),
    kho_boot: Optional[bool] = None,
    memblock_error: Optional[str] = None,
) -> ScratchReport:
    """Assemble a :class:`ScratchReport` from what the readers returned (pure).

    :param memblock: ``None`` when it could not be read (``memblock_error`` says why).
    :param classes: :func:`classify` of ``array`` and ``memblock``.
    """
    memory = list(memblock.memory.regions) if memblock is not None else []
    areas = tuple(
        ScratchArea(i, r.base, r.size, role, node, _nids_under(r, memory))
        for i, (r, (role, node)) in enumerate(zip(array, area_roles(len(array), nodes)))
    )
    rows, total = node_use(classes, memory, usage.free, totalram)
    all_notes = list(notes) + list(usage.notes) + check_notes(classes, runs, areas)
    if memblock_error:
        all_notes.insert(0, f"{memblock_error} Without memblock the flagged regions, the "
                            "extended and unpreserved classes and RAM per node are unknown; "
                            "RAM is totalram.")
    elif memblock is not None and memblock.stale:
        all_notes.insert(0, f"memblock is stale ({memblock.stale_reason}); the flagged regions "
                            "and the classes derived from them may be wrong.")
    if kho_boot is False and classes.flagged:
        all_notes.append(f"This kernel was cold booted, yet {classes.flagged.total} bytes of "
                         f"memory carry {classes.scratch_flag}; only kho_populate() and "
                         "kho_extend_scratch() on a KHO boot mark memory for scratch.")
    elif kho_boot is False:
        all_notes.append("This kernel was cold booted: no memory is flagged for scratch, so "
                         "extended scratch appears only in the next kernel.")
    return ScratchReport(
        symbols=symbols,
        areas=areas,
        flagged=tuple(flagged_regions(memory, classes)),
        classes=classes,
        runs={k: tuple(v) for k, v in runs.items()},
        layout=layout,
        nodes=tuple(rows),
        total=total,
        usage=usage,
        totalram=totalram,
        notes=tuple(all_notes),
        kho_boot=kho_boot,
        memblock_error=memblock_error,
    )


# --- drgn -------------------------------------------------------------------


def find_scratch_symbols(prog: Program) -> Tuple[str, str]:
    """The names under which this kernel has the scratch array and its count.

    :raises NotKhoKernelError: none of :data:`SCRATCH_SYMBOLS` exists.
    """
    for array, count in SCRATCH_SYMBOLS:
        try:
            prog[array]
            prog[count]
        except LookupError:
            continue
        return array, count
    tried = ", ".join(f"{a}/{c}" for a, c in SCRATCH_SYMBOLS)
    raise NotKhoKernelError(
        f"The kernel has none of the scratch symbols {tried}: it was built without "
        "CONFIG_KEXEC_HANDOVER, or the debug info does not belong to it."
    )


def read_scratch_areas(prog: Program) -> Tuple[Tuple[str, str], List[Range]]:
    """Read ``kho_scratch[:kho_scratch_cnt]`` (or its renamed twin) in one read.

    :return: the symbol names found and one range per ``struct kho_scratch``.
    :raises NotKhoKernelError: no symbols, or the array is empty (KHO off).
    :raises CorruptTreeError: an impossible count.
    """
    names = find_scratch_symbols(prog)
    pointer, count = prog[names[0]], prog[names[1]].value_()
    if not pointer.value_() or not count:
        raise NotKhoKernelError(
            f"{names[0]} is empty ({names[1]} = {count}): KHO is disabled on this kernel "
            "(boot with kho=on) or it failed to reserve scratch (see the kernel log)."
        )
    if count > _MAX_AREAS:
        raise CorruptTreeError(
            f"{names[1]} = {count} exceeds the {_MAX_AREAS} areas a kernel can have: "
            "the value is corrupt or the debug info does not match the kernel."
        )
    entries = pointer[:count].read_()
    return names, [Range(e.addr.value_(), e.size.value_()) for e in entries]


def memory_nodes(prog: Program) -> List[int]:
    """The nodes of ``node_states[N_MEMORY]``, ascending ([0] without NUMA data)."""
    try:
        return list(for_each_node_state(prog, prog["N_MEMORY"]))
    except LookupError:
        return [0]


def _free_list_offset(prog: Program) -> int:
    page = prog.type("struct page")
    try:
        return offsetof(page, "buddy_list")
    except LookupError:
        # Before Linux kernel commit "mm/page_alloc: add page->buddy_list and
        # page->pcp_list", free pages were linked through page->lru.
        return offsetof(page, "lru")


class _FreeListWalk:
    # Walks the MIGRATE_CMA free lists with one u64 read per free block.

    def __init__(self, prog: Program, cma: int) -> None:
        self.prog = prog
        self.cma = cma
        self.link = _free_list_offset(prog)
        self.page0 = pfn_to_page(prog, 0).value_()
        self.page_size = sizeof(prog.type("struct page"))
        self.page_shift = prog["PAGE_SHIFT"].value_()
        self.blocks: List[Range] = []
        self.notes: List[str] = []

    def zone(self, zone: drgn.Object) -> None:
        for order, area in enumerate(zone.free_area):
            head = area.free_list[self.cma].address_of_().value_()
            self.walk(head, order, area.nr_free.value_() + 1, zone)

    def walk(self, head: int, order: int, limit: int, zone: drgn.Object) -> None:
        read = self.prog.read_u64
        entry = read(head)
        seen = 0
        while entry and entry != head:
            seen += 1
            if seen > limit:
                self.notes.append(f"zone {zone.name.string_().decode()} order {order}: the "
                                  "CMA free list is longer than nr_free (the kernel changed "
                                  "while it was read); free memory is approximate.")
                return
            pfn, rem = divmod(entry - self.link - self.page0, self.page_size)
            if rem:
                self.notes.append(f"a CMA free list of order {order} links {entry:#x}, which "
                                  "is not a struct page; free memory is approximate.")
                return
            self.blocks.append(Range(pfn << self.page_shift, 1 << (self.page_shift + order)))
            entry = read(entry)


def read_cma_usage(prog: Program) -> CmaUsage:
    """Free ``MIGRATE_CMA`` blocks and the CMA counters of every zone.

    Reads ``zone->free_area[order].free_list[MIGRATE_CMA]`` of each populated
    zone of each online node, ``zone->cma_pages`` and the zone's
    ``NR_FREE_CMA_PAGES``.
    """
    try:
        cma = prog["MIGRATE_CMA"].value_()
    except LookupError:
        return CmaUsage(None, notes=("The kernel has no MIGRATE_CMA (CONFIG_CMA=n), so "
                                     "scratch cannot be CMA and its use cannot be measured.",))
    walk = _FreeListWalk(prog, cma)
    totals: Dict[Optional[int], int] = {}
    frees: Dict[Optional[int], int] = {}
    page = 1 << walk.page_shift
    try:
        free_item = prog["NR_FREE_CMA_PAGES"]
        for pgdat in for_each_online_pgdat(prog):
            nid = pgdat.node_id.value_()
            for zone in pgdat.node_zones:
                if not zone.present_pages.value_():
                    continue
                totals[nid] = totals.get(nid, 0) + zone.cma_pages.value_() * page
                frees[nid] = frees.get(nid, 0) + zone_page_state(zone, free_item) * page
                walk.zone(zone)
    except (LookupError, AttributeError, drgn.FaultError) as e:
        return CmaUsage(None, totals, frees, (f"The CMA free lists could not be read ({e}), "
                                              "so scratch use is unknown.",))
    return CmaUsage(RangeSet(walk.blocks), totals, frees, tuple(walk.notes))


def _class_runs(prog: Program, classes: ScratchClasses) -> Tuple[
        Dict[str, List[PageblockRun]], Optional[PageblockLayout], List[str]]:
    try:
        layout = pageblock_layout(prog)
        reader = SectionUsemaps(prog, layout)
        runs = {name: merge_runs(run for r in classes.get(name) for run in reader.runs(r))
                for name in CLASSES}
    except (DebugInfoError, LookupError, drgn.FaultError) as e:
        return {}, None, [f"Pageblock migratetypes could not be read: {e}"]
    return runs, layout, []


def _totalram_bytes(prog: Program) -> Optional[int]:
    try:
        return totalram_pages(prog) << prog["PAGE_SHIFT"].value_()
    except (LookupError, drgn.FaultError):
        return None


def scratch_report(prog: Program, memblock: Optional[MemblockState] = None) -> ScratchReport:
    """Read everything ``kho scratch`` reports from ``prog``.

    :param memblock: an already read memblock state (read if not given).
    :raises NotKhoKernelError: no scratch symbols, or KHO is off.
    """
    symbols, array = read_scratch_areas(prog)
    state, error = (memblock, None) if memblock is not None else _try_memblock(prog)
    regions = state.memory.regions if state is not None else ()
    flags = state.flags if state is not None else memblock_flag_table(prog)
    classes = classify(RangeSet(array), regions, flags)
    runs, layout, notes = _class_runs(prog, classes)
    return build_report(
        symbols, array, memory_nodes(prog), state, classes, runs, layout, read_cma_usage(prog),
        _totalram_bytes(prog), notes, _kho_boot(prog), error,
    )


def _try_memblock(prog: Program) -> Tuple[Optional[MemblockState], Optional[str]]:
    # The scratch array, migratetypes and CMA use stay valid when memblock
    # was discarded after boot (x86 without ARCH_KEEP_MEMBLOCK).
    try:
        return read_memblock(prog), None
    except (StaleMemblockError, MemoryReadError) as e:
        return None, str(e)


def _kho_boot(prog: Program) -> Optional[bool]:
    from kho_inspect.kho import is_kho_boot, kho_in  # kho imports this module

    try:
        return is_kho_boot(prog) if kho_in(prog) is not None else None
    except drgn.FaultError:
        return None

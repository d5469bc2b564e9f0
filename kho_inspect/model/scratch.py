# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Scratch model
-------------

The ``kho_inspect.model.scratch`` module holds what ``kho-inspect kho
scratch`` reports about the KHO scratch areas, and the pure derivations that
build it from what the walker (:mod:`kho_inspect.scratch`) read:

* **original**: the ``kho_scratch[]`` array itself. ``kho_reserve_scratch()``
  fills it on a cold boot: index 0 is the lowmem area, 1 the global area, and
  ``2 + k`` the area of the k-th node of ``node_states[N_MEMORY]``
  (:func:`area_roles`). Its pageblocks are ``MIGRATE_CMA``.
* **extended**: memory usable for early boot allocations beyond the array.
  Linux 7.3's ``kho_extend_scratch()`` marks it with the plain
  ``MEMBLOCK_KHO_SCRATCH`` flag, so there it is the ``KHO_SCRATCH``-flagged
  memory minus the array. It must not be CMA.
* **unpreserved**: only on kernels whose ``enum memblock_flags`` has a
  separate flag for that memory (``MEMBLOCK_KHO_SCRATCH_EXT`` in the v1
  series, ``MEMBLOCK_KHO_UNPRESERVED`` later): the regions with that flag;
  *extended* is then that memory minus the array.

Decisions are made by enumerator *names* (:data:`SCRATCH_FLAGS`,
:data:`UNPRESERVED_FLAGS`), never by values. See docs/kernel/kho.md#scratch.
Nothing here touches drgn; every report type reads back from its JSON.
"""

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel
from kho_inspect.model.memblock import FlagTable, MemblockState, Region
from kho_inspect.model.pageblock import PageblockLayout, PageblockRun, migratetype_bytes
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "CLASSES",
    "SCRATCH_FLAGS",
    "UNPRESERVED_FLAGS",
    "X86_FIRST_MIB",
    "CmaCounters",
    "CmaUsage",
    "NodeUse",
    "ScratchArea",
    "ScratchClasses",
    "ScratchReport",
    "area_roles",
    "build_report",
    "check_notes",
    "classify",
    "first_flag",
    "first_mib_scratch",
    "flagged_regions",
    "node_use",
)

SCRATCH_FLAGS: Tuple[str, ...] = ("KHO_SCRATCH", "KHO_NOPRSRV", "KHO_BOOTMEM")
"""Known names (prefix stripped) of the memblock flag on scratch memory: 7.3's,
the 7.4 rename (liveupdate ``next`` commit 05a84ceadf70 ("memblock: rename
KHO_SCRATCH to KHO_NOPRSRV"), see docs/kernel/series.md) and a spelling after
the concept's rename to "bootmem"."""

UNPRESERVED_FLAGS: Tuple[str, ...] = ("KHO_UNPRESERVED", "KHO_SCRATCH_EXT")
"""Known names of a separate flag for extended scratch, preferred first."""

CLASSES = ("original", "extended", "unpreserved")

X86_FIRST_MIB = Range(0, 1 << 20)
"""On x86 the first MiB is scratch for the earliest allocations only:
``e820__memblock_setup()`` flags it and ``reserve_real_mode()`` clears the flag
again after the real-mode trampoline got its pages (docs/kernel/kho.md#boot-timeline).
An allocation there in the scratch-only window is legal though memblock no
longer shows the flag."""

_X86_ARCHES = ("x86_64", "x86", "i386")


def first_mib_scratch(arch: Optional[str]) -> RangeSet:
    """:data:`X86_FIRST_MIB` on x86 (``arch`` as :attr:`Snapshot.arch`), else empty.

    >>> first_mib_scratch("x86_64"), first_mib_scratch("aarch64")
    (RangeSet([[0x0-0xfffff]]), RangeSet([]))
    """
    return RangeSet([X86_FIRST_MIB]) if arch in _X86_ARCHES else RangeSet()


@frozen
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

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ScratchArea":
        node = obj.get("node")
        return cls(int(obj["index"]), int(obj["addr"]), int(obj["size"]), str(obj["role"]),
                   None if node is None else int(node),
                   tuple(None if n is None else int(n) for n in obj.get("memblock_nids", ())))


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
    """The first of ``names`` that the kernel's flag enum has.

    >>> renamed = FlagTable({"RSRV_KERN": 0x20, "KHO_NOPRSRV": 0x40})
    >>> first_flag(renamed, SCRATCH_FLAGS), first_flag(renamed, UNPRESERVED_FLAGS)
    ('KHO_NOPRSRV', None)
    """
    return next((n for n in names if flags.has(n)), None)


@frozen
class ScratchClasses(JsonModel):
    """The derived scratch classes (see the module documentation).

    :param flagged: memory with the scratch flag (``scratch_flag``).
    :param scratch_flag: name of the scratch flag, ``None`` if the kernel has none.
    :param unpreserved_flag: name of the separate flag, ``None`` on 7.3.
    """

    original: RangeSet
    extended: RangeSet
    unpreserved: RangeSet
    flagged: RangeSet
    scratch_flag: Optional[str]
    unpreserved_flag: Optional[str]

    @property
    def overlap(self) -> RangeSet:
        """Unpreserved memory that is also original scratch (should be empty)."""
        return self.unpreserved & self.original

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
    )


def flagged_regions(memory: Iterable[Region], classes: ScratchClasses) -> List[Region]:
    """The ``memblock.memory`` regions with the scratch or the unpreserved flag."""
    names = {n for n in (classes.scratch_flag, classes.unpreserved_flag) if n}
    return [r for r in memory if names.intersection(r.flags)]


@frozen
class CmaUsage(JsonModel):
    """Free ``MIGRATE_CMA`` memory as the buddy allocator sees it
    (:func:`kho_inspect.buddy.read_cma_usage`).

    :param free: free blocks on the ``MIGRATE_CMA`` free lists of all zones,
        ``None`` when they could not be read.
    :param cma_total: node -> bytes of ``zone->cma_pages``, summed over zones.
    :param cma_free: node -> bytes of ``NR_FREE_CMA_PAGES``, summed over zones.
    :param notes: what could not be read, and races seen.
    """

    free: Optional[RangeSet]
    cma_total: Mapping[Optional[int], int]
    cma_free: Mapping[Optional[int], int]
    notes: Tuple[str, ...] = ()


@frozen
class CmaCounters(JsonModel):
    """The CMA counters a scratch report shows (its ``"cma"`` JSON).

    :param method: ``"free_lists"`` when scratch use was measured on the
        buddy free lists, ``None`` when they could not be read.
    :param zone_cma_pages: node -> bytes of ``zone->cma_pages``, by node.
    :param nr_free_cma_pages: node -> bytes of ``NR_FREE_CMA_PAGES``, by node.
    """

    method: Optional[str]
    zone_cma_pages: Mapping[Optional[int], int]
    nr_free_cma_pages: Mapping[Optional[int], int]


def _by_node(values: Mapping[Optional[int], int]) -> Dict[Optional[int], int]:
    # Nodes ascending, "no node" (None) last: the order of the JSON and the tables.
    return dict(sorted(values.items(), key=lambda kv: (kv[0] is None, kv[0])))


@frozen
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

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "NodeUse":
        node, free = obj.get("node"), obj.get("free")
        return cls(None if node is None else int(node), int(obj["ram"]), int(obj["original"]),
                   int(obj["extended"]), int(obj["unpreserved"]),
                   None if free is None else int(free))


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


@frozen
class ScratchReport:
    """Everything ``kho-inspect kho scratch`` shows.

    :param symbols: the names found for the array and its count.
    :param flagged: the ``memblock.memory`` regions with the scratch or the
        unpreserved flag.
    :param runs: class -> migratetype runs, for each of :data:`CLASSES`
        (empty runs if the usemaps were unreadable).
    :param layout: the pageblock layout, ``None`` if unreadable.
    :param nodes: per-node cost, ``total`` summed over all memory.
    :param cma: the CMA counters and how use was measured.
    :param totalram: ``totalram_pages()`` in bytes, if read.
    :param kho_boot: whether the kernel was booted through KHO (``None``: unknown).
    :param memblock_error: why memblock could not be read (``None``: it was).
    """

    symbols: Tuple[str, str]
    areas: Tuple[ScratchArea, ...]
    flagged: Tuple[Region, ...]
    classes: ScratchClasses
    runs: Mapping[str, Tuple[PageblockRun, ...]]
    layout: Optional[PageblockLayout]
    nodes: Tuple[NodeUse, ...]
    total: NodeUse
    cma: CmaCounters
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
            "cma": self.cma.to_json(),
            "notes": list(self.notes),
        }

    def _migratetype_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"layout": self.layout.to_json() if self.layout else None}
        for name in CLASSES:
            runs = self.runs.get(name, ())
            out[name] = {"bytes": migratetype_bytes(runs), "runs": [r.to_json() for r in runs]}
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ScratchReport":
        """Rebuild a report from :meth:`to_json` output.

        :raises KeyError, TypeError, ValueError: the object has another shape.
        """
        flags, classes = obj["flags"], obj["classes"]
        flagged = tuple(Region.from_json(r) for r in obj["flagged"])
        scratch_flag = flags["scratch"]
        mts = obj["migratetype"]
        return cls(
            symbols=(str(obj["symbols"]["array"]), str(obj["symbols"]["count"])),
            areas=tuple(ScratchArea.from_json(a) for a in obj["areas"]),
            flagged=flagged,
            classes=ScratchClasses(
                original=RangeSet.from_json(classes["original"]),
                extended=RangeSet.from_json(classes["extended"]),
                unpreserved=RangeSet.from_json(classes["unpreserved"]),
                # classify(): the regions of flagged that carry the scratch flag.
                flagged=RangeSet(r.range for r in flagged
                                 if scratch_flag and scratch_flag in r.flags),
                scratch_flag=scratch_flag,
                unpreserved_flag=flags["unpreserved"],
            ),
            runs={name: tuple(PageblockRun.from_json(r) for r in mts[name]["runs"])
                  for name in CLASSES},
            layout=None if mts["layout"] is None else PageblockLayout.from_json(mts["layout"]),
            nodes=tuple(NodeUse.from_json(n) for n in obj["nodes"]),
            total=NodeUse.from_json(obj["total"]),
            cma=CmaCounters.from_json(obj["cma"]),
            totalram=obj["ram"]["totalram"],
            notes=tuple(str(n) for n in obj["notes"]),
            kho_boot=obj["kho_boot"],
            memblock_error=obj["memblock"]["error"],
        )


def check_notes(classes: ScratchClasses, runs: Mapping[str, Sequence[PageblockRun]],
                areas: Sequence[ScratchArea]) -> List[str]:
    """Plain-language notes on what looks wrong (docs/kernel/invariants.md)."""
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


def _state_notes(memblock: Optional[MemblockState], memblock_error: Optional[str]) -> List[str]:
    if memblock_error:
        return [f"{memblock_error} Without memblock the flagged regions, the extended and "
                "unpreserved classes and RAM per node are unknown; RAM is totalram."]
    if memblock is not None and memblock.stale:
        return [f"memblock is stale ({memblock.stale_reason}); the flagged regions and the "
                "classes derived from them may be wrong."]
    return []


def _boot_notes(kho_boot: Optional[bool], classes: ScratchClasses) -> List[str]:
    if kho_boot is False and classes.flagged:
        return [f"This kernel was cold booted, yet {classes.flagged.total} bytes of memory "
                f"carry {classes.scratch_flag}; only kho_populate() and kho_extend_scratch() "
                "on a KHO boot mark memory for scratch."]
    if kho_boot is False:
        return ["This kernel was cold booted: no memory is flagged for scratch, so extended "
                "scratch appears only in the next kernel."]
    return []


def build_report(
    *,
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

    :param array: the ``kho_scratch[]`` ranges, in index order.
    :param nodes: the nodes of ``N_MEMORY``, ascending.
    :param memblock: ``None`` when it could not be read (``memblock_error`` says why).
    :param classes: :func:`classify` of ``array`` and ``memblock``.
    :param runs: class -> migratetype runs (empty if unreadable).
    :param notes: the readers' own notes, shown first.
    """
    memory = list(memblock.memory.regions) if memblock is not None else []
    areas = tuple(
        ScratchArea(i, r.base, r.size, role, node, _nids_under(r, memory))
        for i, (r, (role, node)) in enumerate(zip(array, area_roles(len(array), nodes)))
    )
    rows, total = node_use(classes, memory, usage.free, totalram)
    all_notes = (_state_notes(memblock, memblock_error) + list(notes) + list(usage.notes)
                 + check_notes(classes, runs, areas) + _boot_notes(kho_boot, classes))
    cma = CmaCounters("free_lists" if usage.free is not None else None,
                      _by_node(usage.cma_total), _by_node(usage.cma_free))
    return ScratchReport(
        symbols=symbols,
        areas=areas,
        flagged=tuple(flagged_regions(memory, classes)),
        classes=classes,
        runs={name: tuple(runs.get(name, ())) for name in CLASSES},
        layout=layout,
        nodes=tuple(rows),
        total=total,
        cma=cma,
        totalram=totalram,
        notes=tuple(all_notes),
        kho_boot=kho_boot,
        memblock_error=memblock_error,
    )

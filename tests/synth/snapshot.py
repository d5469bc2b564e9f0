# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshots of synthetic kernels for the rule tests: plain model objects, no drgn.

:func:`handover` builds the pair ``(current, previous)`` of a KHO handover
that obeys every rule, on one :class:`Machine` (a kernel generation, NUMA or
not, memblock kept or discarded). Each test then breaks one thing with
:func:`dataclasses.replace` and the helpers below, and asserts the evidence.

The machine (16 GiB; node 0 is [0, 8 GiB), node 1 [8, 16 GiB); one node
without NUMA)::

    kho_scratch[0] lowmem  [0x70000000, +256 MiB)   kho_scratch[1] global [6 GiB, +512 MiB)
    kho_scratch[2] node 0  [5 GiB, +256 MiB)        kho_scratch[3] node 1 [12 GiB, +256 MiB)

Kernel N (cold boot, ``7.3.4-n0``) preserves an order-0 page at 256 MiB, a
2 MiB block at 4 GiB + 16 MiB, ``reserve_mem`` 'foo' (64 MiB at 4 GiB +
128 MiB) and a 64 KiB block at 9 GiB; its radix tree is three pages at 10 GiB.
So the busy 1 GiB blocks are 0, 4, 9 and 10, and kernel N+1 (``7.3.4-n1``)
has extended scratch in [1, 4), [5, 9) and [11, 16) GiB minus the areas. N+1
has boot-time 1 GiB pages at 7 and 13 GiB, a buddy one at 14 GiB and a
hugetlb CMA area [15, 16) GiB holding a CMA page.

Flag tables are built from names (:mod:`synth.mm`), as the kernel's debug
info gives them.
"""

from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from synth.mm import FLAGS_73, FLAGS_UNPRESERVED, FLAGS_V1, memory_regions
from synth.mm import memblock_state as make_state

from kho_inspect.checks import run_checks
from kho_inspect.fdt import KexecMetadata, ReserveMemEntry
from kho_inspect.model.bootlog import BootAllocation, BootLog, BootWindow
from kho_inspect.model.check import Evidence, RuleResult
from kho_inspect.model.diagnosis import KhoActivation
from kho_inspect.model.hugetlb import CmaArea, HugePage, HugetlbReport
from kho_inspect.model.kho import KhoStatus
from kho_inspect.model.memblock import FlagTable, MemblockState, Region, ReserveMem
from kho_inspect.model.pageblock import PageblockLayout, PageblockRun
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.scratch import CmaUsage, ScratchReport, build_report, classify
from kho_inspect.model.snapshot import BlobSummary, FdtSummary, Snapshot
from kho_inspect.ranges import Range, RangeSet

__all__ = [
    "GIB", "MIB", "KIB", "GENERATIONS", "FLAG_TABLES", "Machine", "MACHINES",
    "AREAS", "N_PRESERVED", "N_TREE", "N1_PRESERVED", "N1_TREE", "FOO",
    "BOOT_PAGES", "BUDDY_PAGE", "CMA_AREA", "IMAGE", "INITRD", "SCRATCH_PHYS",
    "handover", "cold", "with_memory", "with_reserved", "with_runs", "with_preserved",
    "with_hugetlb", "with_areas", "preserved_report", "scratch_report", "memblock",
    "hugepage", "cma_area", "merge_regions", "judge", "bootlog", "ranges",
]

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

GENERATIONS = ("7.3", "series-v1", "unpreserved")
FLAG_TABLES: Dict[str, FlagTable] = {"7.3": FLAGS_73, "series-v1": FLAGS_V1,
                                     "unpreserved": FLAGS_UNPRESERVED}
UNPRESERVED_FLAG = {"7.3": None, "series-v1": "KHO_SCRATCH_EXT",
                    "unpreserved": "KHO_UNPRESERVED"}

LAYOUT = PageblockLayout(12, 27, 9, 8, 0x7, 0x10, {0: "UNMOVABLE", 1: "MOVABLE", 4: "CMA"})

NODES = ((0, 8 * GIB), (8 * GIB, 16 * GIB))
AREAS = (Range(0x7000_0000, 256 * MIB), Range(6 * GIB, 512 * MIB),
         Range(5 * GIB, 256 * MIB), Range(12 * GIB, 256 * MIB))
FOO = ReserveMem("foo", 4 * GIB + 128 * MIB, 64 * MIB)
N_PRESERVED = ((256 * MIB, 0), (4 * GIB + 16 * MIB, 9), (FOO.start, 14), (9 * GIB, 4))
N_TREE = (10 * GIB, 10 * GIB + 4 * KIB, 10 * GIB + 8 * KIB)
N1_PRESERVED = ((4 * GIB + 256 * MIB, 10), (FOO.start, 14), (9 * GIB + MIB, 0))
N1_TREE = (4 * GIB + 512 * MIB, 4 * GIB + 512 * MIB + 4 * KIB)
BUSY = RangeSet([Range(0, GIB), Range(4 * GIB, GIB), Range(9 * GIB, 2 * GIB)])
BOOT_PAGES = (Range(7 * GIB, GIB), Range(13 * GIB, GIB))
BUDDY_PAGE = Range(14 * GIB, GIB)
CMA_AREA = Range(15 * GIB, GIB)
IMAGE = Range(0x7100_0000, 32 * MIB)
INITRD = Range(0x7400_0000, 16 * MIB)
SCRATCH_PHYS = 0x7FFF_0000
KERN_ALLOC = Range(8 * GIB + 512 * MIB, 16 * MIB)


@dataclass(frozen=True)
class Machine:
    """One kernel build on the synthetic machine.

    :param generation: ``"7.3"``, ``"series-v1"`` (``KHO_SCRATCH_EXT``) or
        ``"unpreserved"`` (``KHO_UNPRESERVED``).
    :param numa: ``CONFIG_NUMA`` (else one node and three areas).
    :param keep: memblock kept after boot (``ARCH_KEEP_MEMBLOCK``).
    """

    generation: str = "7.3"
    numa: bool = True
    keep: bool = True

    @property
    def flags(self) -> FlagTable:
        return FLAG_TABLES[self.generation]

    @property
    def nodes(self) -> Tuple[Tuple[int, int], ...]:
        return NODES if self.numa else ((0, 16 * GIB),)

    @property
    def areas(self) -> Tuple[Range, ...]:
        return AREAS if self.numa else AREAS[:3]

    def node_of(self, addr: int) -> Optional[int]:
        if not self.numa:
            return None
        return next(n for n, (s, e) in enumerate(self.nodes) if s <= addr < e)

    def has(self, flag: str) -> bool:
        return self.flags.has(flag)

    def names(self, *flags: str) -> Tuple[str, ...]:
        """The flags this generation has, in value order."""
        return tuple(sorted((f for f in flags if self.has(f)), key=self.flags.value))


MACHINES = {
    "7.3": Machine("7.3"),
    "series-v1": Machine("series-v1"),
    "unpreserved": Machine("unpreserved"),
    "no-numa": Machine("7.3", numa=False),
    "discarded": Machine("7.3", keep=False),
}


def hugepage(rng: Range, origin: str, m: Machine, state: str = "free") -> HugePage:
    return HugePage(rng.base, rng.size, m.node_of(rng.base), origin, state)


def preserved_report(blocks: Iterable[Tuple[int, int]], tree: Sequence[int], release: str,
                     source: str = "out") -> PreservedReport:
    ranges = tuple((phys, 4 * KIB << order, order) for phys, order in blocks)
    histogram: Dict[int, int] = {}
    for _, _, order in ranges:
        histogram[order] = histogram.get(order, 0) + 1
    return PreservedReport(source=source, ranges=ranges, tree_pages=tuple(tree),
                           histogram=histogram, root=tree[0] if tree else None, kernel=release)


# --- memblock -----------------------------------------------------------------


def _flagged(m: Machine, kho_boot: bool) -> Dict[str, RangeSet]:
    if not kho_boot:
        return {}
    memory = RangeSet(Range.from_bounds(s, e) for s, e in m.nodes)
    original = RangeSet(m.areas)
    free = memory - BUSY
    unp = UNPRESERVED_FLAG[m.generation]
    if unp is None:
        return {"KHO_SCRATCH": free | original}
    return {"KHO_SCRATCH": original, unp: free - original}


def _memory(m: Machine, flagged: Dict[str, RangeSet]) -> List[Region]:
    regions = memory_regions(m.nodes, {k: [(r.base, r.end) for r in v]
                                       for k, v in flagged.items()})
    order = m.flags.value
    regions = [replace(r, flags=tuple(sorted(r.flags, key=order))) for r in regions]
    return regions if m.numa else [replace(r, nid=None) for r in regions]


def merge_regions(items: Iterable[Tuple[Range, Tuple[str, ...]]]) -> List[Region]:
    """Reserved regions as memblock keeps them: sorted, touching equal flags merged."""
    out: List[Region] = []
    for rng, flags in sorted(items, key=lambda i: i[0].base):
        last = out[-1] if out else None
        if last is not None and last.end == rng.base and last.flags == flags:
            out[-1] = Region(last.base, last.size + rng.size, flags)
        else:
            out.append(Region(rng.base, rng.size, flags))
    return out


def _reserved(m: Machine, kho_boot: bool, previous: Optional[PreservedReport]
              ) -> List[Region]:
    kern = m.names("RSRV_KERN")
    items = [(IMAGE, ()), (KERN_ALLOC, kern)]
    if kho_boot:
        items.append((Range(SCRATCH_PHYS, len(m.areas) * 16), ()))
        for phys, size, _ in previous.ranges if previous is not None else ():
            items.append((Range(phys, size), ("RSRV_NOINIT",)))
        for page in BOOT_PAGES:
            head = Range(page.base, 4 * KIB)
            items.append((head, m.names("RSRV_KERN", "RSRV_HUGETLB")))
            items.append((Range(head.end, page.size - head.size),
                          m.names("RSRV_NOINIT", "RSRV_KERN", "RSRV_HUGETLB")))
    return merge_regions(items)


def memblock(m: Machine, kho_boot: bool, previous: Optional[PreservedReport]) -> MemblockState:
    state = make_state(_memory(m, _flagged(m, kho_boot)), _reserved(m, kho_boot, previous),
                       m.flags)
    return replace(state, reserve_mem=(FOO,))


# --- scratch --------------------------------------------------------------------


def _runs(ranges: RangeSet, migratetype: str) -> Tuple[PageblockRun, ...]:
    return tuple(PageblockRun(r.base, r.size, migratetype) for r in ranges)


def scratch_report(m: Machine, state: Optional[MemblockState], kho_boot: bool,
                   areas: Optional[Sequence[Range]] = None) -> ScratchReport:
    areas = tuple(m.areas if areas is None else areas)
    original = RangeSet(areas)
    memory = state.memory.regions if state is not None else ()
    classes = classify(original, memory, m.flags)
    runs = {"original": _runs(original, "CMA"), "extended": _runs(classes.extended, "MOVABLE"),
            "unpreserved": _runs(classes.unpreserved - original, "MOVABLE")
            + _runs(classes.unpreserved & original, "CMA")}
    nodes = [n for n in range(len(m.nodes))]
    return build_report(
        symbols=("kho_scratch", "kho_scratch_cnt"), array=areas, nodes=nodes, memblock=state,
        classes=classes, runs=runs, layout=LAYOUT, usage=CmaUsage(None, {}, {}),
        totalram=16 * GIB, kho_boot=kho_boot,
        memblock_error=None if state is not None else "memblock was discarded after boot "
                                                      "(no ARCH_KEEP_MEMBLOCK)")


# --- whole snapshots ------------------------------------------------------------


def _status(m: Machine, release: str, kho_boot: bool, count: int,
            previous_release: Optional[str]) -> KhoStatus:
    return KhoStatus(
        release=release, enabled=True, kho_boot=kho_boot, kexec_count=count,
        previous_release=previous_release, next_kexec_count=count + 1, compatible="kho-v4",
        compatible_in="kho-v4" if kho_boot else None, luo=True, liveupdate_num=count,
        memblock_flags=m.flags, scratch_in_phys=SCRATCH_PHYS if kho_boot else None,
        scratch_areas=len(m.areas))


def _fdt(direction: str, root: int, release: str, count: int) -> FdtSummary:
    meta = KexecMetadata(1, release, count)
    return FdtSummary(
        direction=direction, address=0xFFFF_8880_0100_0000, compatible="kho-v4",
        mem_map_phys=root,
        blobs=(BlobSummary("kexec-metadata", 0x1_0200_0000, 73, None, "kexec-metadata"),
               BlobSummary("memblock", 0x1_0200_1000, 4096, "memblock-v1", "memblock")),
        kexec_metadata=meta,
        reserve_mem=(ReserveMemEntry(FOO.name, "reserve-mem-v1", FOO.start, FOO.size),))


def _hugetlb(m: Machine, kho_boot: bool) -> HugetlbReport:
    # A cold boot with a hugetlb CMA area breaks scratch-sizing-hugetlb, so
    # only the KHO boot has one.
    if not kho_boot:
        return HugetlbReport(pages=(hugepage(BUDDY_PAGE, "buddy", m),))
    pages = [hugepage(p, "boot", m) for p in BOOT_PAGES]
    pages += [hugepage(BUDDY_PAGE, "buddy", m), hugepage(CMA_AREA, "cma", m, "in use")]
    return HugetlbReport(pages=tuple(pages), cma_areas=(cma_area(CMA_AREA, m),))


def cma_area(rng: Range, m: Machine) -> CmaArea:
    return CmaArea(rng.base, rng.size, m.node_of(rng.base))


def _snapshot(m: Machine, release: str, kho_boot: bool, count: int,
              previous_release: Optional[str], out: PreservedReport,
              incoming: Optional[PreservedReport]) -> Snapshot:
    state = memblock(m, kho_boot, incoming)
    kept = state if m.keep else None
    missing = {} if m.keep else {"memblock": "memblock was discarded after boot (no "
                                             "ARCH_KEEP_MEMBLOCK)"}
    if not kho_boot:
        missing.update(preserved_in="this kernel was not booted through KHO",
                       fdt_in="this kernel was not booted through KHO")
    return Snapshot(
        release=release,
        command_line="console=ttyS0 kho=on liveupdate=on reserve_mem=64M:4K:foo",
        arch="x86_64",
        memblock_flags=m.flags,
        memory_nodes=tuple(range(len(m.nodes))),
        numa=m.numa,
        scratch_alignment=4 * MIB,
        low_address_limit=0xFFFF_FFFF,
        kho_scratch_only=False,
        status=_status(m, release, kho_boot, count, previous_release),
        activation=KhoActivation("active", "KHO is active", "kho=on on the command line",
                                 luo=True),
        memblock=kept,
        scratch=scratch_report(m, kept, kho_boot),
        preserved_out=out,
        preserved_in=(replace(incoming, source="reserved", tree_pages=(), root=None)
                      if kho_boot and incoming is not None and m.keep else None),
        fdt_out=_fdt("out", out.root or 0, release, count + 1),
        fdt_in=_fdt("in", N_TREE[0], previous_release or "", count) if kho_boot else None,
        hugetlb=_hugetlb(m, kho_boot),
        image=IMAGE,
        initrd=INITRD,
        reserve_mem=(FOO,),
        taken_from="vmcore",
        missing=missing,
    )


def cold(m: Machine = MACHINES["7.3"], release: str = "7.3.4-n0") -> Snapshot:
    """Kernel N: cold booted, KHO active, about to kexec."""
    out = preserved_report(N_PRESERVED, N_TREE, release)
    return _snapshot(m, release, False, 0, None, out, None)


def handover(m: Machine = MACHINES["7.3"]) -> Tuple[Snapshot, Snapshot]:
    """``(current, previous)``: kernel N+1 right after a clean KHO boot, and N."""
    previous = cold(m)
    out = preserved_report(N1_PRESERVED, N1_TREE, "7.3.4-n1")
    current = _snapshot(m, "7.3.4-n1", True, 1, previous.release, out,
                        previous.preserved_out)
    return current, previous


# --- breaking things ------------------------------------------------------------


def _with_state(snap: Snapshot, state: MemblockState, m: Machine) -> Snapshot:
    scratch = snap.scratch
    if scratch is not None:
        areas = [a.range for a in scratch.areas]
        scratch = scratch_report(m, state, bool(snap.kho_boot), areas)
    return replace(snap, memblock=state, scratch=scratch)


def with_memory(snap: Snapshot, m: Machine, flagged: Dict[str, Iterable[Range]]) -> Snapshot:
    """``snap`` with ``memblock.memory`` flagged as given (the classes follow)."""
    state = snap.memblock
    assert state is not None
    memory = _memory(m, {k: RangeSet(v) for k, v in flagged.items()})
    types = dict(state.types, memory=replace(state.memory, regions=tuple(memory),
                                             cnt=len(memory)))
    return _with_state(snap, replace(state, types=types), m)


def with_reserved(snap: Snapshot, m: Machine, regions: Sequence[Region]) -> Snapshot:
    state = snap.memblock
    assert state is not None
    types = dict(state.types, reserved=replace(state.reserved, regions=tuple(regions),
                                               cnt=len(regions)))
    return replace(snap, memblock=replace(state, types=types))


def with_runs(snap: Snapshot, name: str, runs: Sequence[PageblockRun]) -> Snapshot:
    scratch = snap.scratch
    assert scratch is not None
    return replace(snap, scratch=replace(scratch, runs=dict(scratch.runs, **{name: tuple(runs)})))


def with_areas(snap: Snapshot, m: Machine, areas: Sequence[Range]) -> Snapshot:
    return replace(snap, scratch=scratch_report(m, snap.memblock, bool(snap.kho_boot), areas))


def with_preserved(snap: Snapshot, blocks: Iterable[Tuple[int, int]],
                   tree: Sequence[int] = ()) -> Snapshot:
    """``snap`` preserving more: extra ``(phys, order)`` blocks and tree pages."""
    out = snap.preserved_out
    assert out is not None
    extra = preserved_report(blocks, tree, out.kernel or "")
    return replace(snap, preserved_out=replace(
        out, ranges=out.ranges + extra.ranges, tree_pages=out.tree_pages + extra.tree_pages))


def with_hugetlb(snap: Snapshot, pages: Sequence[HugePage] = (),
                 cma_areas: Sequence[CmaArea] = ()) -> Snapshot:
    """``snap`` with more gigantic pages and hugetlb CMA areas."""
    h = snap.hugetlb
    assert h is not None
    return replace(snap, hugetlb=replace(h, pages=h.pages + tuple(pages),
                                         cma_areas=h.cma_areas + tuple(cma_areas)))


# --- running one rule -------------------------------------------------------------


def judge(rule: str, current: Snapshot, previous: Optional[Snapshot] = None,
          bootlog: Optional[BootLog] = None) -> RuleResult:
    """The result of one rule."""
    return run_checks(current, previous, bootlog, only=[rule]).results[0]


def bootlog(*allocations: Tuple[Range, str], closed: bool = True) -> BootLog:
    """A parsed ``memblock=debug`` log of a KHO boot whose scratch-only window
    holds one ``memblock_alloc_try_nid`` allocation per ``(range, caller)``."""
    allocs = tuple(
        BootAllocation(phys=rng.base, size=rng.size, caller=caller,
                       request="memblock_alloc_try_nid", flags=("RSRV_KERN",),
                       flags_value=0x20, nid=None, line=10 + i, in_window=True)
        for i, (rng, caller) in enumerate(allocations))
    return BootLog(window=BootWindow(5, 200, closed), allocations=allocs, lines=200)


def ranges(evidence: Iterable[Evidence]) -> List[Optional[Range]]:
    return [e.range for e in evidence]

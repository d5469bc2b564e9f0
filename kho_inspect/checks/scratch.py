# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Scratch rules
-------------

The ``kho_inspect.checks.scratch`` module judges the KHO scratch areas
(``kho_scratch[]``, the *original* scratch) and the memory a KHO boot adds
for early allocations (the *extended* scratch; docs/kernel/kho.md#scratch):

* on Linux 7.3 the extension carries the plain scratch flag, so extended
  scratch is the scratch-flagged memory outside ``kho_scratch[]``;
* on kernels whose ``enum memblock_flags`` has a separate flag
  (``KHO_SCRATCH_EXT`` in the v1 series, ``KHO_UNPRESERVED`` later) it is
  the memory with that flag.

Flags are always named as the kernel's debug info names them (the snapshot's
:attr:`~kho_inspect.model.snapshot.Snapshot.scratch_flag` and
:attr:`~kho_inspect.model.snapshot.Snapshot.unpreserved_flag`).
"""

from typing import List, Sequence, Tuple

from kho_inspect.checks.context import GIB, NEEDS_PREVIOUS, Context, Spans, ranges_text
from kho_inspect.checks.registry import Outcome, Skip, rule
from kho_inspect.model.check import Evidence
from kho_inspect.model.scratch import ScratchArea, ScratchReport, first_mib_scratch
from kho_inspect.ranges import Range, RangeSet

__all__ = ("area_owner", "extended_zone", "extended_words", "flagged_memory")

_KHO = "kernel/liveupdate/kexec_handover.c"
_EXTEND = (f"{_KHO}:916-917 (KHO_SCRATCH_EXT_BLKSIZE = SZ_1G), :920-951 (kho_ext_walk_leaf() and "
           "kho_ext_walk_node() mark every 1 GiB block that a preserved range or a radix page "
           "of the previous kernel touches busy), :954-1043 (kho_extend_scratch() flags the "
           "other blocks)")



def area_owner(scratch: ScratchReport, area: ScratchArea) -> str:
    """``kho_scratch[1] (global)``, under the kernel's name for the array."""
    return f"{scratch.symbols[0]}[{area.index}] ({area.role})"


def flagged_memory(ctx: Context, names: Sequence[str]) -> RangeSet:
    """Memory carrying any of the flags ``names``, plus on x86 the first MiB,
    which ``reserve_real_mode()`` unflags after ``kho_populate()`` flagged it."""
    state = ctx.memblock()
    zone = RangeSet()
    for name in names:
        zone = zone | state.memory.ranges(name)
    return zone | first_mib_scratch(ctx.cur.arch)


def _area_items(scratch: ScratchReport) -> List[Tuple[Range, str]]:
    return [(a.range, area_owner(scratch, a)) for a in scratch.areas]


def extended_words(ctx: Context) -> str:
    """How this kernel marks extended scratch, in its own flag names."""
    unp, flag = ctx.cur.unpreserved_flag, ctx.cur.scratch_flag
    if unp:
        return f"memory flagged {unp}"
    return f"memory flagged {flag} outside kho_scratch[]"


def extended_zone(scratch: ScratchReport) -> RangeSet:
    """Memory that must hold nothing preserved: extended scratch, and on kernels
    with a separate flag all memory with that flag."""
    return scratch.classes.extended | scratch.classes.unpreserved


def _prev_areas(ctx: Context) -> ScratchReport:
    return ctx.scratch(ctx.previous())


@rule(
    "scratch-inherited",
    "The scratch areas of a KHO boot are the previous kernel's, element by element.",
    f"{_KHO}:1923 (kho_memory_init_early() takes the array from kho_in.scratch_phys), "
    ":1941-1952 (kho_memory_init() reserves no new scratch on a KHO boot), :2043-2071 "
    "(kho_fill_kimage() hands the same array on)",
    needs=("previous", "scratch"),
    applies="KHO boots",
)
def scratch_inherited(ctx: Context) -> Outcome:
    ctx.kho_boot()
    prev = _prev_areas(ctx)
    cur = ctx.scratch()
    evidence: List[Evidence] = []
    if len(cur.areas) != len(prev.areas):
        evidence.append(ctx.evidence(
            f"this kernel has {len(cur.areas)} scratch areas, the previous kernel had "
            f"{len(prev.areas)}", owner=cur.symbols[1], expected=len(prev.areas),
            found=len(cur.areas)))
    for old, new in zip(prev.areas, cur.areas):
        if (old.addr, old.size) != (new.addr, new.size):
            evidence.append(ctx.evidence(
                f"{area_owner(cur, new)} is {new.range}, the previous kernel's was {old.range}",
                new.range, area_owner(cur, new), expected=str(old.range), found=str(new.range)))
    return Outcome.of(evidence, f"{len(cur.areas)} areas against the previous kernel's")


@rule(
    "scratch-geometry",
    "There are |N_MEMORY| + 2 scratch areas, each aligned to PAGE_SIZE << MAX_PAGE_ORDER; "
    "the lowmem area ends below ARCH_LOW_ADDRESS_LIMIT and area 2 + k lies on the k-th "
    "node with memory.",
    f"{_KHO}:832-907 (kho_reserve_scratch(): the count, the lowmem range and the per-node "
    "areas), :756-805 (scratch_size_update() and scratch_size_node() round up to "
    "SCRATCH_ALIGNMENT_BYTES, :50)",
    needs=("scratch",),
)
def scratch_geometry(ctx: Context) -> Outcome:
    s = ctx.scratch()
    nodes = ctx.cur.memory_nodes
    evidence: List[Evidence] = []
    if nodes and len(s.areas) != len(nodes) + 2:
        evidence.append(ctx.evidence(
            f"{s.symbols[1]} is {len(s.areas)}, not |N_MEMORY| + 2 = {len(nodes) + 2}",
            owner=s.symbols[1], expected=len(nodes) + 2, found=len(s.areas)))
    align = ctx.cur.scratch_alignment
    for area in s.areas:
        if align and not area.range.is_aligned(align):
            evidence.append(ctx.evidence(
                f"{area_owner(s, area)} {area.range} is not aligned to {align:#x}", area.range,
                area_owner(s, area), expected=align))
    limit = ctx.cur.low_address_limit
    if limit is not None and s.areas and s.areas[0].range.end > limit + 1:
        low = s.areas[0]
        evidence.append(ctx.evidence(
            f"the lowmem area {low.range} ends above ARCH_LOW_ADDRESS_LIMIT {limit:#x}",
            low.range, area_owner(s, low), expected=limit + 1, found=low.range.end))
    evidence += _node_evidence(ctx, s)
    checked = f"{len(s.areas)} areas"
    if not _nodes_known(ctx):
        checked += "; node placement not checked (memblock not kept, or no NUMA)"
    return Outcome.of(evidence, checked)


def _nodes_known(ctx: Context) -> bool:
    return ctx.cur.memblock is not None and ctx.cur.numa is not False


def _node_evidence(ctx: Context, s: ScratchReport) -> List[Evidence]:
    if not _nodes_known(ctx):
        return []
    out = []
    for area in s.areas[2:]:
        if area.node is None or not area.nids or None in area.nids:
            continue
        if set(area.nids) != {area.node}:
            out.append(ctx.evidence(
                f"{area_owner(s, area)} is the area of node {area.node} but lies on memblock "
                f"node(s) {list(area.nids)}", area.range, area_owner(s, area),
                expected=area.node, found=tuple(area.nids)))
    return out


@rule(
    "scratch-cma",
    "Every pageblock of the scratch areas (kho_scratch[]) is MIGRATE_CMA.",
    f"{_KHO}:1859-1876 (kho_init() on a cold boot: init_cma_reserved_pageblock()); "
    "include/linux/kexec_handover.h:44-50 (kho_scratch_migratetype() in memmap init on a KHO "
    "boot, mm/mm_init.c:687, 770, 906)",
    needs=("scratch",),
)
def scratch_cma(ctx: Context) -> Outcome:
    s = ctx.scratch()
    runs = s.runs.get("original", ())
    if s.layout is None or (s.classes.original and not runs):
        raise Skip("pageblock migratetypes were not read: "
                   + ("; ".join(n for n in s.notes if "igratetype" in n) or "no usemaps"))
    areas = _area_items(s)
    evidence = []
    for run in runs:
        if run.migratetype == "CMA":
            continue
        rng = Range(run.base, run.size)
        owner = next((name for r, name in areas if r.overlaps(rng)), None)
        found = run.migratetype + (" (isolated)" if run.isolated else "")
        evidence.append(ctx.evidence(f"{rng} of original scratch is MIGRATE_{run.migratetype}",
                                     rng, owner, expected="CMA", found=found))
    return Outcome.of(evidence, f"{len(runs)} migratetype runs of {len(s.areas)} areas")


@rule(
    "scratch-flagged",
    "On a KHO boot every scratch area lies in memory flagged with the scratch flag; on a cold "
    "boot no memory carries the scratch flag or the unpreserved flag.",
    f"{_KHO}:1999-2011 (kho_populate() marks each inherited area), :954-1043 "
    "(kho_extend_scratch(), the only other marker; both run only on a KHO boot); "
    "arch/x86/realmode/init.c:69 (reserve_real_mode() clears [0, 1 MiB))",
    needs=("memblock", "scratch"),
)
def scratch_flagged(ctx: Context) -> Outcome:
    state = ctx.memblock()
    flag = ctx.cur.scratch_flag
    if flag is None:
        raise Skip("this kernel's enum memblock_flags has no scratch flag")
    if ctx.cur.kho_boot is None:
        raise Skip(f"whether this kernel was booted through KHO is unknown: "
                   f"{ctx.cur.why_missing('status')}")
    if not ctx.cur.kho_boot:
        names = {n for n in (flag, ctx.cur.unpreserved_flag) if n}
        bad = [r for r in state.memory.regions if names.intersection(r.flags)]
        return Outcome.of([ctx.evidence(f"memory region {r.range} carries "
                                        f"{'|'.join(r.flags)} on a cold boot", r.range,
                                        "memblock.memory region") for r in bad],
                          f"{len(state.memory.regions)} memory regions of a cold boot")
    s = ctx.scratch()
    zone = flagged_memory(ctx, (flag,))
    evidence = ctx.misses([Spans.of(_area_items(s))], zone, lambda r, o, gaps: (
        f"{o} {r} is not flagged {flag} at {ranges_text(gaps)}"))
    return Outcome.of(evidence, f"{len(s.areas)} areas against {flag} memory")


@rule(
    "extended-granular",
    "Extended scratch is made of whole 1 GiB blocks: in every block it touches, all memory "
    "is scratch.",
    _EXTEND,
    needs=("memblock", "scratch"),
    applies="KHO boots",
)
def extended_granular(ctx: Context) -> Outcome:
    ctx.kho_boot()
    s = ctx.extended_classes()
    state = ctx.memblock()
    covered = s.classes.original | extended_zone(s)
    blocks = _blocks(extended_zone(s))
    holes = (blocks & state.memory.ranges()) - covered
    words = extended_words(ctx)
    evidence = []
    for hole in holes:
        block = Range(hole.base & ~(GIB - 1), GIB)
        evidence.append(ctx.evidence(
            f"{hole} is memory in the 1 GiB block {block}, which is otherwise extended scratch, "
            f"but it is not {words}", hole, f"1 GiB block {block}"))
    return Outcome.of(evidence, f"{len(blocks)} runs of 1 GiB blocks of {words}")


def _blocks(zone: RangeSet) -> RangeSet:
    return RangeSet(Range.from_bounds(r.base & ~(GIB - 1), -(-r.end // GIB) * GIB)
                    for r in zone)


@rule(
    "extended-not-cma",
    "No pageblock of extended scratch is MIGRATE_CMA (only kho_scratch[] is).",
    "include/linux/kexec_handover.h:44-50 (kho_scratch_migratetype() tests kho_scratch[] "
    f"only); {_KHO}:954-1043 (kho_extend_scratch() only sets a memblock flag)",
    needs=("memblock", "scratch"),
    applies="KHO boots",
)
def extended_not_cma(ctx: Context) -> Outcome:
    ctx.kho_boot()
    s = ctx.extended_classes()
    runs = s.runs.get("extended", ())
    if s.layout is None:
        raise Skip("pageblock migratetypes were not read")
    # CMA areas (cma=, hugetlb_cma=) are MIGRATE_CMA wherever memblock put them.
    areas = RangeSet(a.range for a in ctx.cur.cma_areas) | _hugetlb_cma(ctx)
    cma = RangeSet(Range(r.base, r.size) for r in runs if r.migratetype == "CMA") - areas
    words = extended_words(ctx)
    evidence = [ctx.evidence(f"{r} of extended scratch is MIGRATE_CMA", r, words,
                             expected="not CMA", found="CMA") for r in cma]
    checked = f"{len(runs)} migratetype runs of {words}"
    if areas:
        checked += f", CMA areas {ranges_text(list(areas))} excepted"
    return Outcome.of(evidence, checked)


def _hugetlb_cma(ctx: Context) -> RangeSet:
    h = ctx.cur.hugetlb
    return RangeSet(Range(a.base, a.size) for a in h.cma_areas) if h is not None else RangeSet()


@rule(
    "extended-no-preserved",
    "Extended scratch (on kernels with an unpreserved flag: all memory with that flag) holds "
    "no range the previous kernel preserved and no page of its radix tree.",
    _EXTEND,
    needs=("memblock", "scratch", "previous"),
    applies="KHO boots",
)
def extended_no_preserved(ctx: Context) -> Outcome:
    ctx.kho_boot()
    s = ctx.extended_classes()
    spans, checked = _previous_preserved(ctx)
    words = extended_words(ctx)
    evidence = ctx.hits(spans, extended_zone(s), lambda r, o, parts: (
        f"{o} {r} lies in {words} at {ranges_text(parts)}"))
    return Outcome.of(evidence, f"{checked} against {words}")


def _previous_preserved(ctx: Context) -> Tuple[List[Spans], str]:
    # N's ranges and tree pages from its snapshot, else the ranges this
    # kernel reserved for N (no tree pages: they are not reserved).
    if ctx.prev is not None:
        report = ctx.preserved_out(ctx.prev)
        spans = [ctx.spans(report, "N"), ctx.spans(report, "N", pages=True)]
        return spans, (f"{len(report.ranges)} ranges and {len(report.tree_pages)} radix pages "
                       "of the previous kernel")
    report = ctx.cur.preserved_in
    if report is None:
        raise Skip(NEEDS_PREVIOUS)
    return ([ctx.spans(report, "N")],
            f"{len(report.ranges)} ranges this kernel reserved for the previous kernel (from "
            f"{report.source}; its radix pages need --previous)")

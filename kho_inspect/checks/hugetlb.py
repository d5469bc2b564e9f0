# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Gigantic-page rules
-------------------

The ``kho_inspect.checks.hugetlb`` module judges where gigantic hugetlb
pages went (docs/kernel/hugetlb.md):

* boot-time pages (``memblock_alloc_hugetlb()``) on a KHO boot lie outside
  ``kho_scratch[]``, inside extended scratch (7.3: scratch-flagged memory
  outside the array; kernels with an unpreserved flag: memory with that flag
  and none flagged with the scratch flag), so in 1 GiB blocks that held
  nothing the previous kernel preserved;
* runtime pages from the buddy allocator never lie in ``kho_scratch[]``
  (``MIGRATE_CMA``), and hugetlb CMA pages lie in the hugetlb CMA areas;
* the hugetlb CMA areas themselves get no scratch avoidance on a KHO boot,
  and on a cold boot the scratch sizing counts them as kernel memory: both
  known holes are rules so that a run shows them.
"""

import shlex
from typing import List, Optional, Tuple

from kho_inspect.checks.context import Context, Spans, mib, ranges_text
from kho_inspect.checks.registry import Outcome, Skip, rule
from kho_inspect.checks.scratch import extended_words, extended_zone
from kho_inspect.model.diagnosis import DEFAULT_SCRATCH_SCALE
from kho_inspect.model.hugetlb import ORIGINS, HugetlbReport
from kho_inspect.ranges import Range, RangeSet

__all__ = ("scratch_sizing_mode",)

_MEMBLOCK = "mm/memblock.c"
_KHO = "kernel/liveupdate/kexec_handover.c"
_BOOT = (f"{_MEMBLOCK}:1777-1831 (memblock_alloc_hugetlb(): size-aligned, under "
         "choose_memblock_flags(), retried away from kho_scratch_overlap())")

Item = Tuple[Range, str]


def _hugetlb(ctx: Context) -> HugetlbReport:
    report = ctx.section("hugetlb")
    assert isinstance(report, HugetlbReport)
    return report


def _spans(items: List[Item]) -> List[Spans]:
    return [Spans.of(items)]


def _pages(report: HugetlbReport, origin: str) -> List[Item]:
    out = []
    for page in report.pages:
        if page.origin != origin:
            continue
        node = "" if page.node is None else f", node {page.node}"
        what = "page of unknown origin" if origin == "unknown" else f"{origin} page"
        out.append((Range(page.phys, page.size),
                    f"hugetlb {what} ({mib(page.size)}{node}, {page.state})"))
    return out


def _cma_areas(report: HugetlbReport) -> List[Item]:
    return [(Range(a.base, a.size),
             "hugetlb CMA area" + ("" if a.node is None else f" of node {a.node}"))
            for a in report.cma_areas]


@rule(
    "hugetlb-aligned",
    "Every gigantic hugetlb page is aligned to its size.",
    f"{_BOOT}; mm/page_alloc.c:7562 (alloc_contig_frozen_pages_noprof() scans size-aligned "
    "ranges); mm/cma.c:932 (cma_alloc_frozen_compound() with the order as alignment)",
    needs=("hugetlb",),
)
def hugetlb_aligned(ctx: Context) -> Outcome:
    report = _hugetlb(ctx)
    items = [item for origin in ORIGINS for item in _pages(report, origin)]
    evidence = [ctx.evidence(f"{owner} {rng} is not aligned to its size", rng, owner,
                             expected=rng.size, found=rng.base % rng.size)
                for rng, owner in items if rng.size and rng.base % rng.size]
    return Outcome.of(evidence, f"{len(items)} gigantic pages")


@rule(
    "hugetlb-boot-outside-scratch",
    "No boot-time gigantic page lies in the scratch areas (kho_scratch[]), nor, on kernels "
    "with an unpreserved flag, in memory flagged with the scratch flag. A page of unknown "
    "origin (boot or buddy: memblock discarded and no boot log) is held to kho_scratch[], "
    "which both must avoid.",
    f"{_BOOT}; on a cold boot kho_reserve_scratch() runs after hugetlb_bootmem_alloc() "
    "(mm/mm_init.c:2634, :2668) and avoids the pages",
    needs=("hugetlb", "scratch"),
)
def hugetlb_boot_outside_scratch(ctx: Context) -> Outcome:
    report = _hugetlb(ctx)
    zone = ctx.scratch().classes.original
    words = "kho_scratch[]"
    state = ctx.cur.memblock
    flag = ctx.cur.scratch_flag
    if ctx.cur.unpreserved_flag and state is not None and flag:
        zone = zone | state.memory.ranges(flag)
        words += f" or memory flagged {flag}"
    items = _pages(report, "boot")
    evidence = ctx.hits(_spans(items), zone, lambda r, o, parts: (
        f"{o} {r} lies in {words} at {ranges_text(parts)}"))
    checked = f"{len(items)} boot-time gigantic pages against {words}"
    unknown = _pages(report, "unknown")
    if unknown:
        evidence += ctx.hits(_spans(unknown), ctx.scratch().classes.original,
                             lambda r, o, parts: (
                                 f"{o} {r} lies in kho_scratch[] at {ranges_text(parts)}"))
        checked += (f", and {len(unknown)} of unknown origin against kho_scratch[] (give "
                    "--bootlog or --dmesg to tell boot pages from runtime ones)")
    return Outcome.of(evidence, checked)


@rule(
    "hugetlb-boot-in-extended",
    "On a KHO boot every boot-time gigantic page lies in extended scratch (7.3: memory "
    "flagged with the scratch flag outside kho_scratch[]; kernels with an unpreserved flag: "
    "memory with that flag).",
    f"{_BOOT}; {_MEMBLOCK}:180-187 (choose_memblock_flags() in scratch-only mode); "
    f"{_KHO}:995-1043 (kho_extend_scratch() runs before hugetlb_bootmem_alloc(), "
    "mm/mm_init.c:2629-2634)",
    needs=("hugetlb", "memblock", "scratch"),
    applies="KHO boots",
)
def hugetlb_boot_in_extended(ctx: Context) -> Outcome:
    ctx.kho_boot()
    report = _hugetlb(ctx)
    s = ctx.extended_classes()
    words = extended_words(ctx)
    items = _pages(report, "boot")
    evidence = ctx.misses(_spans(items), extended_zone(s), lambda r, o, gaps: (
        f"{o} {r} is not in {words} at {ranges_text(gaps)}"))
    return Outcome.of(evidence, f"{len(items)} boot-time gigantic pages against {words}")


@rule(
    "hugetlb-boot-unpreserved-blocks",
    "On a KHO boot every boot-time gigantic page lies in 1 GiB blocks that held no range the "
    "previous kernel preserved and no page of its radix tree.",
    f"{_KHO}:920-951 (kho_ext_walk_leaf() and kho_ext_walk_node() mark those blocks busy), "
    f":954-1043 (only the other blocks become extended scratch); {_BOOT}",
    needs=("hugetlb", "previous"),
    applies="KHO boots",
)
def hugetlb_boot_unpreserved_blocks(ctx: Context) -> Outcome:
    ctx.kho_boot()
    report = _hugetlb(ctx)
    busy = ctx.busy_blocks(ctx.preserved_out(ctx.previous()))
    items = _pages(report, "boot")
    evidence = ctx.hits(_spans(items), busy, lambda r, o, parts: (
        f"{o} {r} lies in a 1 GiB block the previous kernel's preserved memory or radix "
        f"tree touches ({ranges_text(parts)})"))
    return Outcome.of(evidence, f"{len(items)} boot-time gigantic pages against "
                                f"{len(busy)} busy 1 GiB runs of the previous kernel")


@rule(
    "hugetlb-runtime-outside-scratch",
    "No runtime gigantic page from the buddy allocator lies in the scratch areas "
    "(kho_scratch[]), and every hugetlb CMA page lies in a hugetlb CMA area.",
    "mm/page_isolation.c:135-154 (has_unmovable_pages() refuses MIGRATE_CMA pageblocks to "
    "non-CMA contiguous allocations); mm/hugetlb_cma.c:53 (hugetlb_cma_alloc_frozen_folio() "
    "allocates from hugetlb_cma[nid])",
    needs=("hugetlb", "scratch"),
)
def hugetlb_runtime_outside_scratch(ctx: Context) -> Outcome:
    report = _hugetlb(ctx)
    buddy, cma = _pages(report, "buddy"), _pages(report, "cma")
    evidence = []
    if buddy:
        zone = ctx.scratch().classes.original
        evidence += ctx.hits(_spans(buddy), zone, lambda r, o, parts: (
            f"{o} {r} lies in kho_scratch[] at {ranges_text(parts)}"))
    areas = RangeSet(r for r, _ in _cma_areas(report))
    evidence += ctx.misses(_spans(cma), areas, lambda r, o, gaps: (
        f"{o} {r} lies outside every hugetlb CMA area at {ranges_text(gaps)}"))
    return Outcome.of(evidence, f"{len(buddy)} buddy and {len(cma)} CMA gigantic pages")


@rule(
    "hugetlb-cma-vs-scratch",
    "No hugetlb CMA area overlaps the scratch areas (kho_scratch[]).",
    "none on a KHO boot (known hole): mm/cma.c:387-430 (cma_alloc_mem() places the area with "
    "memblock_alloc_range_nid() under scratch-only rules, with no kho_scratch[] avoidance); "
    "on a cold boot kho_reserve_scratch() runs after hugetlb_cma_reserve() (mm/mm_init.c:2633, "
    ":2668)",
    needs=("hugetlb", "scratch"),
)
def hugetlb_cma_vs_scratch(ctx: Context) -> Outcome:
    report = _hugetlb(ctx)
    zone = ctx.scratch().classes.original
    items = _cma_areas(report)
    evidence = ctx.hits(_spans(items), zone, lambda r, o, parts: (
        f"{o} {r} overlaps original scratch at {ranges_text(parts)}"))
    return Outcome.of(evidence, f"{len(items)} hugetlb CMA areas")


@rule(
    "scratch-sizing-hugetlb",
    "On a cold boot the scratch sizing counts no hugetlb memory (hugetlb CMA areas "
    "included).",
    f"{_KHO}:756-805 (scratch_size_update() and scratch_size_node() subtract only "
    f"RSRV_HUGETLB); mm/cma.c:403-430 and {_MEMBLOCK}:1587 (a hugetlb CMA area is reserved "
    "RSRV_KERN before kho_reserve_scratch(), mm/mm_init.c:2633, :2668)",
    needs=("hugetlb", "activation"),
    applies="cold boots with KHO requested",
)
def scratch_sizing_hugetlb(ctx: Context) -> Outcome:
    if ctx.cur.kho_boot:
        raise Skip("this kernel inherited its scratch areas: the cold-boot kernel of the chain "
                   "sized them")
    act = ctx.cur.activation
    if act is None or not act.requested:
        raise Skip("KHO was not requested on this kernel, so no scratch was sized")
    report = _hugetlb(ctx)
    mode, scale = scratch_sizing_mode(ctx)
    areas = _cma_areas(report)
    if mode == "explicit":
        return Outcome.of((), "kho_scratch= gives explicit sizes: reservations do not count")
    evidence = [ctx.evidence(
        f"{owner} {rng} is reserved RSRV_KERN before kho_reserve_scratch() and counted as "
        f"kernel memory: the global (or lowmem) area and its node's area each grew by "
        f"{scale}% of it, {mib(2 * rng.size * scale // 100)} in all", rng, owner,
        expected=0, found=2 * rng.size * scale // 100) for rng, owner in areas]
    return Outcome.of(evidence, f"{len(areas)} hugetlb CMA areas at a scale of {scale}%")


def scratch_sizing_mode(ctx: Context) -> Tuple[str, int]:
    """``("scale", percent)`` or ``("explicit", 0)``: from the activation's
    sizing inputs, else from ``kho_scratch=`` on the command line."""
    act = ctx.cur.activation
    sizing = act.sizing if act is not None else None
    if sizing is not None and sizing.mode in ("scale", "explicit"):
        return sizing.mode, sizing.scale or DEFAULT_SCRATCH_SCALE
    value = _param(ctx.cur.command_line or "", "kho_scratch")
    if value is None:
        return "scale", DEFAULT_SCRATCH_SCALE
    if value.endswith("%") and value[:-1].isdigit():
        return "scale", int(value[:-1])
    return "explicit", 0


def _param(command_line: str, name: str) -> Optional[str]:
    try:
        words = shlex.split(command_line)
    except ValueError:
        words = command_line.split()
    found = None
    for word in words:
        if word.startswith(name + "="):
            found = word[len(name) + 1:]  # the last one wins, as for early_param
    return found

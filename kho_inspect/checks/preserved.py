# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Preserved-memory rules
----------------------

The ``kho_inspect.checks.preserved`` module judges the memory a kernel
preserves for the next one and how the next one receives it
(docs/kernel/radix.md, docs/kernel/radix.md#preservation-sources): nothing
preserved and no radix-tree page in the scratch areas, a well-formed tree,
everything the previous kernel preserved reserved in this one, and
``reserve_mem=`` regions revived at the address they were handed over at.

The outgoing tree of the running kernel is judged always; with ``--previous``
the tree the previous kernel handed over is judged too.
"""

import shlex
from bisect import bisect_right
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from kho_inspect.checks.context import MAX_EVIDENCE, Context, more_evidence, ranges_text
from kho_inspect.checks.registry import Outcome, Skip, rule
from kho_inspect.fdt import ReserveMemEntry
from kho_inspect.model.check import Evidence
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.ranges import Range, RangeSet

__all__ = ("radix_problems", "reserve_mem_names")

_KHO = "kernel/liveupdate/kexec_handover.c"

KEY_WIDTH_EXTRA = 1
"""``KHO_RADIX_KEY_WIDTH = 64 - PAGE_SHIFT + 1`` (include/linux/kho/abi/kexec_handover.h)."""


def _reports(ctx: Context) -> List[Tuple[PreservedReport, str, Snapshot]]:
    """The outgoing trees to judge: this kernel's, and the previous kernel's
    with ``--previous``; skip when there is neither."""
    out = []
    if ctx.cur.preserved_out is not None:
        out.append((ctx.cur.preserved_out, "this kernel", ctx.cur))
    if ctx.prev is not None and ctx.prev.preserved_out is not None:
        out.append((ctx.prev.preserved_out, "N", ctx.prev))
    if not out:
        ctx.preserved_out()  # skips with the reason it is missing
    return out


def _against_scratch(ctx: Context, pages: bool) -> Outcome:
    zone = ctx.scratch().classes.original
    evidence: List[Evidence] = []
    counts = []
    for report, who, _ in _reports(ctx):
        spans = ctx.spans(report, who, pages)
        counts.append(f"{len(spans)} of {who}")
        evidence += ctx.hits([spans], zone, lambda r, o, parts: (
            f"{o} {r} lies in original scratch at {ranges_text(parts)}"))
    what = "radix pages" if pages else "preserved ranges"
    return Outcome.of(evidence, f"{what} ({', '.join(counts)}) against kho_scratch[]")


@rule(
    "preserved-not-in-scratch",
    "No memory preserved for the next kernel lies in the scratch areas (kho_scratch[]).",
    f"{_KHO}:1148-1160 and :1223-1240 (kho_preserve_folio() and kho_preserve_pages() refuse "
    "scratch only with CONFIG_KEXEC_HANDOVER_DEBUG); unmovable allocations never come from "
    "CMA scratch; mm/memblock.c:2863 (known hole: a reserve_mem region allocated on a KHO "
    "boot may lie in scratch)",
    needs=("scratch", "preserved_out"),
)
def preserved_not_in_scratch(ctx: Context) -> Outcome:
    return _against_scratch(ctx, pages=False)


@rule(
    "radix-pages-not-in-scratch",
    "No page of the preserved-memory radix tree lies in the scratch areas (kho_scratch[]).",
    f"{_KHO}:178-196 (kho_radix_alloc_node(): get_zeroed_page(GFP_KERNEL) once slab is up, "
    "never a MIGRATE_CMA page)",
    needs=("scratch", "preserved_out"),
)
def radix_pages_not_in_scratch(ctx: Context) -> Outcome:
    return _against_scratch(ctx, pages=True)


@rule(
    "radix-well-formed",
    "The preserved-memory radix tree is well formed: keys fit KHO_RADIX_KEY_WIDTH, every "
    "range is aligned to its order, ranges are pairwise disjoint, tree pages are distinct "
    "page-aligned RAM pages outside the ranges.",
    f"{_KHO}:127-162 (kho_encode_radix_key()/kho_decode_radix_key()), :215-235 "
    "(kho_radix_add_key() rejects keys wider than KHO_RADIX_KEY_WIDTH), :392-486 "
    "(kho_radix_walk_tree()); overlapping preservations are not detected by the kernel",
    needs=("preserved_out",),
)
def radix_well_formed(ctx: Context) -> Outcome:
    corrupt = [(snap, who) for snap, who in ((ctx.cur, "this kernel"), (ctx.prev, "N"))
               if snap is not None and "preserved_out" in snap.corrupt]
    evidence = [ctx.evidence(f"the radix tree of {who} could not be walked: "
                             f"{snap.corrupt['preserved_out']}", owner=f"radix tree of {who}")
                for snap, who in corrupt]
    reports = _reports_or_none(ctx) if corrupt else _reports(ctx)
    total = len(evidence)
    for report, who, snap in reports:
        ram = snap.memblock.memory.ranges() if snap.memblock is not None else None
        for what, rng in radix_problems(report, ram):
            total += 1
            if total <= MAX_EVIDENCE:
                evidence.append(ctx.evidence(what, rng, f"radix tree of {who}", name=False))
    if total > MAX_EVIDENCE:
        evidence.append(more_evidence(total))
    sizes = ", ".join(f"{len(r.ranges)} ranges and {len(r.tree_pages)} pages of {w}"
                      for r, w, _ in reports)
    return Outcome.of(evidence, sizes or "nothing readable")


def _reports_or_none(ctx: Context) -> List[Tuple[PreservedReport, str, Snapshot]]:
    try:
        return _reports(ctx)
    except Skip:
        return []


Problem = Tuple[str, Optional[Range]]


def radix_problems(report: PreservedReport, ram: Optional[RangeSet] = None
                   ) -> Iterator[Problem]:
    """What is wrong with one decoded tree, as ``(sentence, range)`` pairs (pure).

    Linear in the ranges and pages after one sort; a sentence is built only
    for a problem found.

    :param ram: where tree pages and ranges may lie (``None``: not checked).
    """
    page = 1 << report.page_shift
    width = 64 - report.page_shift + KEY_WIDTH_EXTRA
    for key in report.keys or ():
        if key.bit_length() > width:
            yield (f"key {key:#x} is {key.bit_length()} bits wide, more than "
                   f"KHO_RADIX_KEY_WIDTH {width}", None)
    ranges = sorted(report.ranges)
    yield from _range_problems(ranges, page)
    pages = sorted(report.tree_pages)
    yield from _page_problems(pages, page)
    starts = [p for p, _, _ in ranges]
    for p in pages:
        i = bisect_right(starts, p) - 1
        if i >= 0 and p < ranges[i][0] + ranges[i][1]:
            yield f"tree page {Range(p, page)} lies inside preserved memory", Range(p, page)
    if ram is not None:
        yield from _outside_ram(((p, s) for p, s, _ in ranges), ram)
        yield from _outside_ram(((p, page) for p in pages), ram)


def _range_problems(ranges: Sequence[Tuple[int, int, Optional[int]]], page: int
                    ) -> Iterator[Problem]:
    end, last = -1, Range(0, 0)
    for phys, size, order in ranges:
        block = page << (order or 0)
        if phys % block or size % block or not size:
            yield (f"range {Range(phys, size)} is not aligned to its order {order} "
                   f"({block:#x} bytes)", Range(phys, size))
        if phys < end:
            this = Range(phys, size)
            yield f"preserved ranges {last} and {this} overlap", this.intersect(last)
        if phys + size > end:
            end, last = phys + size, Range(phys, size)


def _page_problems(pages: Sequence[int], page: int) -> Iterator[Problem]:
    for i, p in enumerate(pages):
        if p % page:
            yield f"tree page {p:#x} is not page-aligned", Range(p, page)
        if i and pages[i - 1] == p and (i < 2 or pages[i - 2] != p):
            count = 2
            while i + count - 1 < len(pages) and pages[i + count - 1] == p:
                count += 1
            yield f"tree page {p:#x} is reachable {count} times", Range(p, page)


def _outside_ram(spans: Iterable[Tuple[int, int]], ram: RangeSet) -> Iterator[Problem]:
    bases, ends = [r.base for r in ram], [r.end for r in ram]
    for base, size in spans:
        i = bisect_right(bases, base) - 1
        if i < 0 or base + size > ends[i]:
            rng = Range(base, size)
            yield f"{rng} is not RAM (memblock.memory)", rng


@rule(
    "preserved-reserved",
    "Everything the previous kernel preserved is reserved in this kernel (memblock.reserved "
    "regions flagged RSRV_NOINIT).",
    f"{_KHO}:614-633 (kho_preserved_memory_reserve(): memblock_reserve() and "
    "memblock_reserved_mark_noinit() for every key), :1685-1703 (kho_mem_retrieve())",
    needs=("previous", "memblock"),
    applies="KHO boots of kernels that keep memblock",
)
def preserved_reserved(ctx: Context) -> Outcome:
    ctx.kho_boot()
    prev = ctx.previous()
    state = ctx.memblock()
    report = ctx.preserved_out(prev)
    if not state.flags.has("RSRV_NOINIT"):
        raise Skip("this kernel's enum memblock_flags has no RSRV_NOINIT")
    zone = state.reserved.ranges("RSRV_NOINIT")
    evidence = ctx.misses([ctx.spans(report, "N")], zone, lambda r, o, gaps: (
        f"{o} {r} is not reserved RSRV_NOINIT here at {ranges_text(gaps)}"))
    return Outcome.of(evidence, f"{len(report.ranges)} ranges of {prev.release}")


@rule(
    "reserve-mem-revived",
    "A reserve_mem= region handed over by the previous kernel and asked for again is revived "
    "at the same address with the same size.",
    "mm/memblock.c:2744-2791 (reserve_mem_kho_revive() takes start and size from the "
    "'memblock' blob), :2803-2878 (reserve_mem() tries it before allocating)",
    needs=("fdt_in",),
    applies="KHO boots",
)
def reserve_mem_revived(ctx: Context) -> Outcome:
    ctx.kho_boot()
    entries = _handed_over(ctx)
    table = {e.name: e for e in ctx.cur.reserve_mem}
    asked = reserve_mem_names(ctx.cur.command_line or "")
    evidence = []
    for entry in entries:
        if entry.start is None or entry.size is None:
            continue
        handed = Range(entry.start, entry.size)
        got = table.get(entry.name)
        owner = f"reserve_mem '{entry.name}'"
        if got is None:
            if entry.name in asked:
                evidence.append(ctx.evidence(
                    f"{owner} was handed over at {handed} and asked for again, but this "
                    "kernel has no such reservation", handed, owner, expected=str(handed),
                    name=False))
            continue
        if (got.start, got.size) != (entry.start, entry.size):
            found = Range(got.start, got.size)
            evidence.append(ctx.evidence(
                f"{owner} was handed over at {handed} and is at {found} here: it was allocated "
                "afresh, not revived", found, owner, expected=str(handed), found=str(found),
                name=False))
    return Outcome.of(evidence, f"{len(entries)} handed-over reserve_mem regions")


@rule(
    "reserve-mem-handed-over",
    "Every reserve_mem= region of this kernel lies outside the scratch areas and is in the "
    "outgoing 'memblock' blob, so that the next kernel can revive it.",
    "mm/memblock.c:2642-2713 (prepare_kho_fdt() preserves each region and adds the blob; on "
    "any error it logs 'failed to prepare memblock FDT for KHO' and hands over none), "
    "kernel/liveupdate/kexec_handover.c:1231-1235 (kho_preserve_pages() refuses scratch "
    "memory with KEXEC_HANDOVER_DEBUG); the hole: mm/memblock.c:2863 ('TODO: Allocation "
    "must be outside of scratch region') lets a fresh region on a KHO boot land in scratch",
    needs=("scratch", "fdt_out"),
    applies="kernels with KHO active and reserve_mem= regions",
)
def reserve_mem_handed_over(ctx: Context) -> Outcome:
    regions = [r for r in ctx.cur.reserve_mem if r.size]
    original = ctx.scratch().classes.original
    out = ctx.section("fdt_out")
    handed = {e.name: e for e in out.reserve_mem}  # type: ignore[attr-defined]
    evidence = []
    for region in regions:
        rng, owner = Range(region.start, region.size), f"reserve_mem '{region.name}'"
        inside = RangeSet([rng]) & original
        if inside:
            evidence.append(ctx.evidence(
                f"{owner} at {rng} lies in original scratch at {ranges_text(list(inside))}: "
                "it was allocated afresh while only scratch memory could be allocated, and "
                "the next kernel allocates from scratch before it can revive it",
                rng, owner, name=False))
        entry = handed.get(region.name)
        if entry is None or (entry.start, entry.size) != (region.start, region.size):
            got = ("is missing from" if entry is None
                   else f"is at {entry.start:#x}+{entry.size:#x} in")
            evidence.append(ctx.evidence(
                f"{owner} at {rng} {got} the outgoing 'memblock' blob: the next kernel will "
                "not revive it (look for 'failed to prepare memblock FDT for KHO' in the "
                "kernel log)", rng, owner, expected=str(rng),
                found=None if entry is None else f"{entry.start:#x}+{entry.size:#x}",
                name=False))
    return Outcome.of(evidence, f"{len(regions)} reserve_mem regions against kho_scratch[] "
                                "and the outgoing 'memblock' blob")


def _handed_over(ctx: Context) -> Tuple[ReserveMemEntry, ...]:
    fin = ctx.cur.fdt_in
    if fin is not None:
        return fin.reserve_mem
    if ctx.prev is not None and ctx.prev.fdt_out is not None:
        return ctx.prev.fdt_out.reserve_mem
    ctx.section("fdt_in")  # skips with the reason
    return ()


def reserve_mem_names(command_line: str) -> List[str]:
    """The names of the ``reserve_mem=SIZE:ALIGN:NAME`` words of a command line.

    >>> reserve_mem_names("ro reserve_mem=64M:4K:foo quiet reserve_mem=1M:4096:bar")
    ['foo', 'bar']
    """
    try:
        words = shlex.split(command_line)
    except ValueError:
        words = command_line.split()
    names = []
    for word in words:
        if word.startswith("reserve_mem="):
            parts = word[len("reserve_mem="):].split(":")
            if len(parts) == 3 and parts[2]:
                names.append(parts[2])
    return names

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Placement rules
---------------

The ``kho_inspect.checks.placement`` module judges where a KHO boot put
itself: the kernel image, the initrd and the scratch array that
``kexec_file_load()`` loaded (all in the scratch areas), and every memblock
allocation made while ``kho_scratch_only`` was set, rebuilt from a
``memblock=debug`` boot log (all in scratch-flagged memory;
docs/kernel/memblock.md#scratch-only-allocation).
"""

from typing import List, Tuple

from kho_inspect.checks.context import MAX_EVIDENCE, Context, Spans, ranges_text
from kho_inspect.checks.registry import Outcome, Skip, rule
from kho_inspect.checks.scratch import flagged_memory
from kho_inspect.ranges import Range, RangeSet

__all__ = ()

_KHO = "kernel/liveupdate/kexec_handover.c"

ALL_ADDRESSES = Range(0, 1 << 64)

SCRATCH_ENTRY_SIZE = 16
"""``sizeof(struct kho_scratch)``: ``phys_addr_t addr, size``."""


@rule(
    "image-in-scratch",
    "The kernel image, the initrd and the scratch array that kexec_file_load() placed for "
    "this kernel lie in the scratch areas (kho_scratch[]).",
    f"{_KHO}:2094-2105 (kho_locate_mem_hole(): every kexec_file segment goes into scratch), "
    ":2043-2071 (kho_fill_kimage(): the scratch array is such a segment); "
    "arch/x86/boot/compressed/kaslr.c:770-800 (process_kho_entries(): KASLR stays in scratch)",
    needs=("scratch", "image"),
    applies="KHO boots",
)
def image_in_scratch(ctx: Context) -> Outcome:
    ctx.kho_boot()
    zone = ctx.scratch().classes.original
    items = _segments(ctx)
    if not items:
        raise Skip(f"neither the image nor the initrd nor the scratch array is known: "
                   f"{ctx.cur.why_missing('image')}")
    evidence = ctx.misses([Spans.of(items)], zone, lambda r, o, gaps: (
        f"the {o} {r} lies outside the scratch areas at {ranges_text(gaps)}"))
    unknown = [n for n in ("image", "initrd") if getattr(ctx.cur, n) is None]
    checked = ", ".join(o for _, o in items)
    if unknown:
        checked += "; not known: " + ", ".join(f"{n} ({ctx.cur.why_missing(n)})" for n in unknown)
    return Outcome.of(evidence, checked)


def _segments(ctx: Context) -> List[Tuple[Range, str]]:
    items = []
    if ctx.cur.image is not None:
        items.append((ctx.cur.image, "kernel image"))
    if ctx.cur.initrd is not None:
        items.append((ctx.cur.initrd, "initrd"))
    status = ctx.cur.status
    if status is not None and status.scratch_in_phys:
        count = len(ctx.cur.scratch.areas) if ctx.cur.scratch is not None else 0
        if count:
            items.append((Range(status.scratch_in_phys, count * SCRATCH_ENTRY_SIZE),
                          "scratch array (kho_in.scratch_phys)"))
    return items


@rule(
    "boot-allocations-in-scratch",
    "Every memblock allocation made while kho_scratch_only was set (from 'KHO: found kexec "
    "handover data.' to memblock_free_all()) lies in scratch memory.",
    "mm/memblock.c:180-187 (choose_memblock_flags() asks for the scratch flag), :1207-1247 "
    "(should_skip_region() skips other memory), :2600-2608 (kho_scratch_only is set by "
    f"kho_populate(), {_KHO}:2023, and cleared by memblock_free_all(), mm/memblock.c:2494)",
    needs=("bootlog", "memblock or previous"),
    applies="KHO boots booted with memblock=debug",
)
def boot_allocations_in_scratch(ctx: Context) -> Outcome:
    ctx.kho_boot()
    log = ctx.bootlog()
    if log.window is None:
        raise Skip("the boot log has no 'KHO: found kexec handover data.' line (a log that "
                   "does not start at boot? boot with log_buf_len=8M)")
    zone, how = _scratch_memory(ctx)
    allocations = log.in_window()
    if not any(a.is_allocation for a in log.allocations):
        # Without memblock=debug the log has no allocation at all: nothing was checked.
        raise Skip("the boot log has no memblock=debug lines (boot with memblock=debug "
                   "log_buf_len=8M to record boot-time allocations)")
    spans = Spans(((a.phys, a.size, a) for a in allocations), lambda a: (
        f"{a.request} for {a.caller}"))
    evidence = []
    for i in spans.outside(zone)[:MAX_EVIDENCE]:
        a, rng = spans.tags[i], spans.range(i)
        gaps = RangeSet([rng]) - zone
        evidence.append(ctx.evidence(
            f"{spans.owner(i)} (log line {a.line}) got {rng}, outside scratch memory at "
            f"{ranges_text(list(gaps))}", rng, spans.owner(i),
            flags=a.flags if ctx.cur.memblock is None else None))
    checked = f"{len(allocations)} allocations in the scratch-only window against {how}"
    if not log.window.closed:
        checked += " (the log stops inside the window)"
    return Outcome.of(evidence, checked)


def _scratch_memory(ctx: Context) -> Tuple[RangeSet, str]:
    names = [n for n in (ctx.cur.scratch_flag, ctx.cur.unpreserved_flag) if n]
    if ctx.cur.memblock is not None and names:
        return flagged_memory(ctx, names), "memory flagged " + " or ".join(names)
    original = ctx.scratch().classes.original
    if ctx.prev is not None and ctx.prev.preserved_out is not None:
        extended = RangeSet([ALL_ADDRESSES]) - ctx.busy_blocks(ctx.prev.preserved_out)
        return original | extended, ("kho_scratch[] and the 1 GiB blocks free of the previous "
                                     "kernel's preserved memory")
    raise Skip("memblock not kept on this kernel and no --previous: extended scratch, where "
               "most early allocations go, is unknown")

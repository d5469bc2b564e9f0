# SPDX-License-Identifier: LGPL-2.1-or-later
"""
memblock rules
--------------

The ``kho_inspect.checks.memblock`` module judges the memblock arrays of a
kernel that keeps them (docs/kernel/memblock.md#struct-layouts): each type
sorted, disjoint and merged, its count within its capacity, and
``kho_scratch_only`` cleared once boot released memory to the buddy
allocator. ``total_size`` is allowed to drift from the sum of the sizes
(``memblock_trim_memory()`` rounds regions without updating it;
docs/kernel/memblock.md#total-size-drift).
"""

from typing import List

from kho_inspect.checks.context import Context
from kho_inspect.checks.registry import Outcome, rule
from kho_inspect.model.check import Evidence
from kho_inspect.model.memblock import MemblockType

__all__ = ()

_MEMBLOCK = "mm/memblock.c"


@rule(
    "memblock-sane",
    "Each memblock type holds at most max regions, sorted, disjoint and merged (no touching "
    "neighbours with the same node and flags), and kho_scratch_only is false after boot.",
    f"{_MEMBLOCK}:535-562 (memblock_merge_regions()), :610-714 (memblock_add_range() "
    "inserts in order and merges), :1042-1062 (memblock_setclr_flag() merges after "
    "marking), :2494-2503 (memblock_free_all() clears kho_scratch_only)",
    needs=("memblock",),
    applies="kernels that keep memblock (CONFIG_ARCH_KEEP_MEMBLOCK)",
)
def memblock_sane(ctx: Context) -> Outcome:
    state = ctx.memblock()
    evidence: List[Evidence] = []
    for mtype in state.types.values():
        evidence += _type_evidence(ctx, mtype)
    if ctx.cur.kho_scratch_only:
        evidence.append(ctx.evidence(
            "kho_scratch_only is still set after boot: memblock allocations are confined to "
            "scratch", owner="kho_scratch_only", expected=False, found=True))
    counts = ", ".join(f"{len(t.regions)} {name}" for name, t in state.types.items())
    return Outcome.of(evidence, f"regions: {counts}")


def _type_evidence(ctx: Context, mtype: MemblockType) -> List[Evidence]:
    owner = f"memblock.{mtype.name}"
    out = []
    if mtype.cnt > mtype.max:
        out.append(ctx.evidence(f"{owner}.cnt {mtype.cnt} exceeds max {mtype.max}", owner=owner,
                                expected=mtype.max, found=mtype.cnt))
    for i, (a, b) in enumerate(zip(mtype.regions, mtype.regions[1:])):
        where = f"{owner}[{i}] {a.range} and [{i + 1}] {b.range}"
        if b.base < a.end:
            what = "overlap" if b.base >= a.base else "are out of order"
            out.append(ctx.evidence(f"{where} {what}", a.range.intersect(b.range) or b.range,
                                    owner, name=False))
        elif b.base == a.end and (a.nid, a.flags) == (b.nid, b.flags):
            out.append(ctx.evidence(
                f"{where} touch with the same node and flags but were not merged",
                b.range, owner, name=False))
    return out

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The preserved-memory rules, failing: preserved memory and radix pages in
scratch, malformed trees, preserved memory not reserved, reserve_mem not
revived. Each asserts the exact ranges, owners and flags named."""

from dataclasses import replace

import pytest
from synth.snapshot import (
    AREAS,
    FOO,
    GIB,
    KIB,
    MACHINES,
    MIB,
    handover,
    judge,
    merge_regions,
    ranges,
    with_preserved,
    with_reserved,
)

from kho_inspect.checks.preserved import radix_problems, reserve_mem_names
from kho_inspect.model.memblock import ReserveMem
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.snapshot import FdtSummary
from kho_inspect.ranges import Range, RangeSet

ALL = list(MACHINES)
WITH_MEMBLOCK = ["7.3", "series-v1", "unpreserved", "no-numa"]


# --- preserved-not-in-scratch --------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_preserved_in_scratch_fails_for_this_kernel_and_for_n(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    glob = AREAS[1]
    cur = with_preserved(cur, [(glob.base + 8 * MIB, 9)])
    prev = with_preserved(prev, [(AREAS[0].base, 0)])
    result = judge("preserved-not-in-scratch", cur, prev)
    assert result.status == "fail"
    assert ranges(result.evidence) == [Range(glob.base + 8 * MIB, 2 * MIB),
                                       Range(AREAS[0].base, 4 * KIB)]
    assert [e.owner for e in result.evidence] == ["preserved by this kernel, order 9",
                                                  "preserved by N, order 0"]
    assert all(e.klass == "original" for e in result.evidence)
    flags = ("KHO_SCRATCH",) if MACHINES[machine].keep else ()
    assert all(e.flags == flags for e in result.evidence)


@pytest.mark.parametrize("machine", ALL)
def test_preserved_in_scratch_names_a_reserve_mem_region(machine: str) -> None:
    # The known hole: reserve_mem= allocated afresh on a KHO boot lands in scratch.
    m = MACHINES[machine]
    cur, prev = handover(m)
    bar = ReserveMem("bar", AREAS[1].base + 64 * MIB, 64 * MIB)
    cur = with_preserved(replace(cur, reserve_mem=cur.reserve_mem + (bar,)), [(bar.start, 14)])
    result = judge("preserved-not-in-scratch", cur, prev)
    (ev,) = result.evidence
    assert ev.range == Range(bar.start, bar.size)
    assert ev.owner == "reserve_mem 'bar' (preserved by this kernel, order 14)"


def test_preserved_in_scratch_skips_without_any_tree() -> None:
    cur, _ = handover()
    cur = replace(cur, preserved_out=None, missing={"preserved_out": "KHO is not active"})
    result = judge("preserved-not-in-scratch", cur)
    assert result.status == "skip"
    assert result.reason.endswith("KHO is not active")


# --- radix-pages-not-in-scratch -------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_radix_pages_in_scratch_fail(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    node1 = AREAS[3] if MACHINES[machine].numa else AREAS[2]
    cur = with_preserved(cur, [], [node1.base + 4 * KIB])
    result = judge("radix-pages-not-in-scratch", cur, prev)
    (ev,) = result.evidence
    assert ev.range == Range(node1.base + 4 * KIB, 4 * KIB)
    assert ev.owner == "radix tree page of this kernel"
    assert ev.klass == "original"


# --- radix-well-formed ----------------------------------------------------------------


def _tree(**kwargs: object) -> PreservedReport:
    base = PreservedReport(source="out", ranges=((4 * GIB, 2 * MIB, 9),),
                           tree_pages=(5 * GIB, 5 * GIB + 4 * KIB))
    return replace(base, **kwargs)


def test_radix_problems_of_a_good_tree() -> None:
    assert list(radix_problems(_tree(), RangeSet([Range(0, 8 * GIB)]))) == []


def test_radix_problems_name_each_fault() -> None:
    bad = _tree(
        ranges=((4 * GIB + 4 * KIB, 2 * MIB, 9),        # not aligned to order 9
                (4 * GIB + 64 * KIB, 64 * KIB, 4),      # overlaps the first
                (20 * GIB, 4 * KIB, 0)),                # not RAM
        tree_pages=(5 * GIB, 5 * GIB, 5 * GIB + 100,      # twice; not page-aligned
                    4 * GIB + 8 * KIB),                 # inside preserved memory
        keys=(1 << 53, 1 << 52),                        # 54 bits wide
    )
    problems = list(radix_problems(bad, RangeSet([Range(0, 8 * GIB)])))
    text = [p for p, _ in problems]
    assert text[0] == "key 0x20000000000000 is 54 bits wide, more than KHO_RADIX_KEY_WIDTH 53"
    assert "range [0x100001000-0x100200fff] is not aligned to its order 9" in text[1]
    assert any("overlap" in t for t in text)
    assert "tree page 0x140000064 is not page-aligned" in text
    assert "tree page 0x140000000 is reachable 2 times" in text
    assert any(t.startswith("tree page [0x100002000-0x100002fff] lies inside") for t in text)
    assert ("[0x500000000-0x500000fff] is not RAM (memblock.memory)", Range(20 * GIB, 4 * KIB)
            ) in problems


@pytest.mark.parametrize("machine", ALL)
def test_radix_well_formed_fails_on_overlapping_preservations(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    cur = with_preserved(cur, [(FOO.start + 4 * MIB, 10)])  # inside 'foo', order 14
    result = judge("radix-well-formed", cur, prev)
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == Range(FOO.start + 4 * MIB, 4 * MIB)
    assert ev.owner == "radix tree of this kernel"
    assert "overlap" in ev.what


def test_radix_well_formed_fails_on_a_corrupt_tree() -> None:
    cur, prev = handover()
    cur = replace(cur, preserved_out=None,
                  corrupt={"preserved_out": "radix table at 0x1000 links 0x123: not aligned"})
    result = judge("radix-well-formed", cur, prev)
    assert result.status == "fail"
    assert result.evidence[0].what.endswith("links 0x123: not aligned")
    assert "of N" in result.reason  # N's tree was still judged


# --- preserved-reserved ---------------------------------------------------------------


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_preserved_reserved_fails_on_an_unreserved_range(machine: str) -> None:
    m = MACHINES[machine]
    cur, prev = handover(m)
    assert cur.memblock is not None
    gone = Range(9 * GIB, 64 * KIB)
    kept = [r for r in cur.memblock.reserved.regions if r.range != gone]
    # Only its first half is reserved noinit.
    kept = merge_regions([(r.range, r.flags) for r in kept]
                         + [(Range(gone.base, 32 * KIB), ("RSRV_NOINIT",))])
    result = judge("preserved-reserved", with_reserved(cur, m, kept), prev)
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == gone
    assert ev.owner == "preserved by N, order 4"
    assert ev.flags == ("RSRV_NOINIT",)
    assert ev.what.endswith("not reserved RSRV_NOINIT here at [0x240008000-0x24000ffff]")


def test_preserved_reserved_skips_where_memblock_is_discarded() -> None:
    cur, prev = handover(MACHINES["discarded"])
    assert judge("preserved-reserved", cur, prev).reason.startswith(
        "memblock not kept on this kernel")


# --- reserve-mem-revived ---------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_reserve_mem_revived_fails_on_a_fresh_allocation(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    fresh = ReserveMem("foo", AREAS[1].base, FOO.size)
    result = judge("reserve-mem-revived", replace(cur, reserve_mem=(fresh,)), prev)
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == Range(fresh.start, fresh.size)
    assert ev.owner == "reserve_mem 'foo'"
    assert (ev.expected, ev.found) == (str(Range(FOO.start, FOO.size)),
                                       str(Range(fresh.start, fresh.size)))
    assert ev.klass == "original"


def test_reserve_mem_revived_fails_when_asked_again_and_missing() -> None:
    cur, _ = handover()
    result = judge("reserve-mem-revived", replace(cur, reserve_mem=()))
    assert result.status == "fail"
    assert "asked for again" in result.evidence[0].what
    released = replace(cur, reserve_mem=(), command_line="console=ttyS0 kho=on")
    assert judge("reserve-mem-revived", released).status == "pass"


def test_reserve_mem_revived_reads_the_previous_fdt_without_an_incoming_one() -> None:
    cur, prev = handover()
    fresh = replace(cur, fdt_in=None, reserve_mem=(ReserveMem("foo", 0, FOO.size),))
    assert judge("reserve-mem-revived", fresh, prev).status == "fail"
    assert judge("reserve-mem-revived", fresh).status == "skip"


def test_reserve_mem_names() -> None:
    assert reserve_mem_names('a reserve_mem=1M:4K:x "b=c d" reserve_mem=bad') == ["x"]
    assert isinstance(handover()[0].fdt_in, FdtSummary)


# --- reserve-mem-handed-over -------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_reserve_mem_handed_over_passes(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    assert cur.reserve_mem and cur.fdt_out is not None and cur.fdt_out.reserve_mem
    assert judge("reserve-mem-handed-over", cur, prev).status == "pass"


@pytest.mark.parametrize("machine", ALL)
def test_reserve_mem_handed_over_fails_like_the_lab_hole(machine: str) -> None:
    # What the lab's reserve_mem=64M:4K:late on a KHO boot did to Linux 7.3: the fresh
    # region landed in the global scratch area, kho_preserve_pages() refused it, and
    # prepare_kho_fdt() handed over no region at all (the revived 'foo' included).
    cur, prev = handover(MACHINES[machine])
    late = ReserveMem("late", AREAS[1].base + 16 * MIB, 64 * MIB)
    assert cur.fdt_out is not None
    cur = replace(cur, reserve_mem=cur.reserve_mem + (late,),
                  fdt_out=replace(cur.fdt_out, reserve_mem=()))
    result = judge("reserve-mem-handed-over", cur, prev)
    assert result.status == "fail"
    by_owner = {}
    for ev in result.evidence:
        by_owner.setdefault(ev.owner, []).append(ev)
    assert sorted(by_owner) == ["reserve_mem 'foo'", "reserve_mem 'late'"]
    in_scratch, missing = by_owner["reserve_mem 'late'"]
    assert in_scratch.range == Range(late.start, late.size) and in_scratch.klass == "original"
    assert "lies in original scratch at" in in_scratch.what
    assert "missing from the outgoing 'memblock' blob" in missing.what
    (foo,) = by_owner["reserve_mem 'foo'"]
    assert foo.range == Range(FOO.start, FOO.size) and foo.expected == str(foo.range)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The scratch rules, failing: each test breaks one thing of a clean handover
(tests/synth/snapshot.py) and asserts the exact ranges and flags named."""

from dataclasses import replace
from typing import Dict

import pytest
from synth.snapshot import (
    AREAS,
    BUSY,
    GIB,
    MACHINES,
    MIB,
    UNPRESERVED_FLAG,
    cold,
    handover,
    judge,
    preserved_report,
    ranges,
    with_areas,
    with_memory,
    with_preserved,
    with_runs,
)

from kho_inspect.model.pageblock import PageblockRun
from kho_inspect.ranges import Range, RangeSet

WITH_MEMBLOCK = ["7.3", "series-v1", "unpreserved", "no-numa"]
ALL = list(MACHINES)


NOTHING = Range(0, 0)


def _flagged(machine: str, unflag: Range = NOTHING) -> Dict[str, RangeSet]:
    """The flags of a clean N+1, with ``unflag`` taken off the extension."""
    m = MACHINES[machine]
    memory = RangeSet(Range.from_bounds(s, e) for s, e in m.nodes)
    original = RangeSet(m.areas)
    free = memory - BUSY - RangeSet([unflag])
    unp = UNPRESERVED_FLAG[m.generation]
    if unp is None:
        return {"KHO_SCRATCH": free | original}
    return {"KHO_SCRATCH": original, unp: free - original}


# --- scratch-inherited -----------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_scratch_inherited_fails_on_a_moved_area(machine: str) -> None:
    m = MACHINES[machine]
    cur, prev = handover(m)
    moved = list(m.areas)
    moved[1] = Range(6 * GIB + 512 * MIB, 512 * MIB)
    result = judge("scratch-inherited", with_areas(cur, m, moved), prev)
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == moved[1]
    assert ev.owner == "kho_scratch[1] (global)"
    assert (ev.expected, ev.found) == (str(AREAS[1]), str(moved[1]))


def test_scratch_inherited_fails_on_another_count() -> None:
    m = MACHINES["7.3"]
    cur, prev = handover(m)
    result = judge("scratch-inherited", with_areas(cur, m, m.areas[:3]), prev)
    assert result.status == "fail"
    assert (result.evidence[0].expected, result.evidence[0].found) == (4, 3)
    assert result.evidence[0].owner == "kho_scratch_cnt"


def test_scratch_inherited_skips() -> None:
    cur, prev = handover()
    assert judge("scratch-inherited", cur).reason.startswith("needs --previous")
    assert judge("scratch-inherited", cold(), prev).reason.startswith("this kernel was cold")


# --- scratch-geometry ------------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_scratch_geometry_fails_on_misalignment_and_lowmem_limit(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    areas = list(m.areas)
    areas[0] = Range(5 * GIB - 256 * MIB, 256 * MIB)      # lowmem above 4 GiB
    areas[1] = Range(6 * GIB + 4096, 512 * MIB)           # not 4 MiB aligned
    result = judge("scratch-geometry", with_areas(cur, m, areas))
    assert result.status == "fail"
    assert ranges(result.evidence) == [areas[1], areas[0]]
    assert result.evidence[0].expected == 4 * MIB
    assert result.evidence[1].owner == "kho_scratch[0] (lowmem)"
    assert result.evidence[1].expected == 1 << 32


def test_scratch_geometry_fails_on_the_count_of_nodes() -> None:
    m = MACHINES["7.3"]
    cur, _ = handover(m)
    result = judge("scratch-geometry", with_areas(cur, m, m.areas[:3]))
    assert result.status == "fail"
    assert (result.evidence[0].expected, result.evidence[0].found) == (4, 3)


@pytest.mark.parametrize("machine", ["7.3", "series-v1", "unpreserved"])
def test_scratch_geometry_fails_on_an_area_of_the_wrong_node(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    areas = list(m.areas)
    areas[3] = Range(7 * GIB, 256 * MIB)  # the node 1 area on node 0
    result = judge("scratch-geometry", with_areas(cur, m, areas))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == areas[3]
    assert (ev.expected, ev.found) == (1, (0,))


@pytest.mark.parametrize("machine", ["no-numa", "discarded"])
def test_scratch_geometry_says_when_nodes_are_not_checked(machine: str) -> None:
    cur, _ = handover(MACHINES[machine])
    result = judge("scratch-geometry", cur)
    assert result.status == "pass"
    assert "node placement not checked" in result.reason


# --- scratch-cma -------------------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_scratch_cma_fails_on_a_movable_pageblock_run(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    glob = AREAS[1]
    runs = [PageblockRun(a.base, a.size, "CMA") for a in m.areas if a != glob]
    runs += [PageblockRun(glob.base, 2 * MIB, "MOVABLE"),
             PageblockRun(glob.base + 2 * MIB, glob.size - 2 * MIB, "CMA", isolated=True)]
    result = judge("scratch-cma", with_runs(cur, "original", runs))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == Range(glob.base, 2 * MIB)
    assert (ev.owner, ev.klass, ev.expected, ev.found) == (
        "kho_scratch[1] (global)", "original", "CMA", "MOVABLE")


def test_scratch_cma_skips_without_migratetypes() -> None:
    cur, _ = handover()
    assert cur.scratch is not None
    cur = replace(cur, scratch=replace(cur.scratch, layout=None))
    assert judge("scratch-cma", cur).reason.startswith("pageblock migratetypes were not read")


# --- scratch-flagged ---------------------------------------------------------------------


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_scratch_flagged_fails_on_an_unflagged_area(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    hole = Range(5 * GIB + 64 * MIB, 64 * MIB)  # inside the node 0 area
    flagged = _flagged(machine)
    flagged["KHO_SCRATCH"] = flagged["KHO_SCRATCH"] - RangeSet([hole])
    result = judge("scratch-flagged", with_memory(cur, m, flagged))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == AREAS[2]
    assert ev.owner == "kho_scratch[2] (node 0)"
    assert str(hole) in ev.what and "not flagged KHO_SCRATCH" in ev.what


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_scratch_flagged_fails_on_flags_after_a_cold_boot(machine: str) -> None:
    m = MACHINES[machine]
    snap = cold(m)
    flag = UNPRESERVED_FLAG[m.generation] or "KHO_SCRATCH"
    result = judge("scratch-flagged", with_memory(snap, m, {flag: [Range(GIB, GIB)]}))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == Range(GIB, GIB)
    assert ev.flags == (flag,)


def test_scratch_flagged_allows_the_x86_realmode_hole() -> None:
    m = MACHINES["7.3"]
    cur, _ = handover(m)
    areas = list(m.areas)
    areas[0] = Range(0, 256 * MIB)
    flagged = _flagged("7.3")
    flagged["KHO_SCRATCH"] = (flagged["KHO_SCRATCH"] | RangeSet([areas[0]])) - RangeSet(
        [Range(0, MIB)])
    cur = with_areas(with_memory(cur, m, flagged), m, areas)
    assert judge("scratch-flagged", cur).status == "pass"
    assert judge("scratch-flagged", replace(cur, arch="aarch64")).status == "fail"


# --- extended-granular ----------------------------------------------------------------


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_extended_granular_fails_on_a_partly_flagged_block(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    hole = Range(8 * GIB + 128 * MIB, 256 * MIB)
    result = judge("extended-granular", with_memory(cur, m, _flagged(machine, hole)))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == hole
    assert ev.owner == f"1 GiB block {Range(8 * GIB, GIB)}"
    words = UNPRESERVED_FLAG[m.generation] or "KHO_SCRATCH outside kho_scratch[]"
    assert f"not memory flagged {words}" in ev.what
    assert ev.flags == ()


# --- extended-not-cma -----------------------------------------------------------------


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_extended_not_cma_fails_on_a_cma_run(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    assert cur.scratch is not None
    runs = list(cur.scratch.runs["extended"])
    bad = PageblockRun(8 * GIB, 2 * MIB, "CMA")
    result = judge("extended-not-cma", with_runs(cur, "extended", runs + [bad]))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == Range(8 * GIB, 2 * MIB)
    assert ev.found == "CMA"
    unp = UNPRESERVED_FLAG[m.generation]
    assert ev.owner == (f"memory flagged {unp}" if unp else
                        "memory flagged KHO_SCRATCH outside kho_scratch[]")
    assert ev.flags == ((unp,) if unp else ("KHO_SCRATCH",))
    assert ev.klass == ("unpreserved" if unp else "extended")


# --- extended-no-preserved --------------------------------------------------------------


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_extended_no_preserved_fails_on_preserved_memory_and_tree_pages(machine: str) -> None:
    m = MACHINES[machine]
    cur, prev = handover(m)
    # N preserved a page and had a tree page in blocks that N+1 flagged anyway.
    prev = with_preserved(prev, [(8 * GIB + 4 * MIB, 0)], [11 * GIB])
    result = judge("extended-no-preserved", cur, prev)
    assert result.status == "fail"
    assert ranges(result.evidence) == [Range(8 * GIB + 4 * MIB, 4096), Range(11 * GIB, 4096)]
    assert [e.owner for e in result.evidence] == ["preserved by N, order 0",
                                                   "radix tree page of N"]
    unp = UNPRESERVED_FLAG[m.generation]
    assert all(e.flags == ((unp,) if unp else ("KHO_SCRATCH",)) for e in result.evidence)
    assert all(e.klass == ("unpreserved" if unp else "extended") for e in result.evidence)
    assert (unp or "KHO_SCRATCH outside kho_scratch[]") in result.evidence[0].what


def test_extended_no_preserved_uses_this_kernels_reservations_without_previous() -> None:
    m = MACHINES["7.3"]
    cur, _ = handover(m)
    incoming = preserved_report([(256 * MIB, 0), (8 * GIB, 0)], (), "n0", "reserved")
    result = judge("extended-no-preserved", replace(cur, preserved_in=incoming))
    assert result.status == "fail"
    assert ranges(result.evidence) == [Range(8 * GIB, 4096)]
    assert "radix pages need --previous" in result.reason
    assert judge("extended-no-preserved", replace(cur, preserved_in=None)).reason.startswith(
        "needs --previous")


def test_extended_not_cma_excepts_cma_areas() -> None:
    # cma= and hugetlb_cma= areas are MIGRATE_CMA wherever memblock placed them.
    from kho_inspect.model.snapshot import CmaRegion

    m = MACHINES["7.3"]
    cur, _ = handover(m)
    assert cur.scratch is not None
    runs = list(cur.scratch.runs["extended"])
    cma = [PageblockRun(8 * GIB, 64 * MIB, "CMA"), PageblockRun(15 * GIB, GIB, "CMA")]
    cur = with_runs(cur, "extended", runs + cma)
    result = judge("extended-not-cma", cur)
    assert ranges(result.evidence) == [Range(8 * GIB, 64 * MIB)]  # 15 GiB is hugetlb CMA
    cur = replace(cur, cma_areas=(CmaRegion("reserved", 8 * GIB, 64 * MIB, 1),))
    result = judge("extended-not-cma", cur)
    assert result.status == "pass"
    assert "CMA areas [0x200000000-0x203ffffff], [0x3c0000000-0x3ffffffff] excepted" in (
        result.reason)

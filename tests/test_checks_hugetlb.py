# SPDX-License-Identifier: LGPL-2.1-or-later
"""The gigantic-page rules, failing, on every kernel generation: boot pages in
scratch, outside extended scratch, in blocks the previous kernel used; runtime
pages in scratch; hugetlb CMA over scratch; CMA in the scratch sizing."""

from dataclasses import replace

import pytest
from synth.snapshot import (
    AREAS,
    GIB,
    MACHINES,
    MIB,
    UNPRESERVED_FLAG,
    cma_area,
    cold,
    handover,
    hugepage,
    judge,
    ranges,
    with_hugetlb,
    with_memory,
)

from kho_inspect.model.diagnosis import KhoActivation, ScratchSizing
from kho_inspect.ranges import Range, RangeSet

ALL = list(MACHINES)
WITH_MEMBLOCK = ["7.3", "series-v1", "unpreserved", "no-numa"]


@pytest.mark.parametrize("machine", ALL)
def test_hugetlb_aligned_fails_on_a_misaligned_page(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    page = Range(11 * GIB + 2 * MIB, GIB)
    result = judge("hugetlb-aligned", with_hugetlb(cur, [hugepage(page, "buddy", m)]))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == page
    assert (ev.expected, ev.found) == (GIB, 2 * MIB)
    node = "" if not m.numa else ", node 1"
    assert ev.owner == f"hugetlb buddy page (1024 MiB{node}, free)"


@pytest.mark.parametrize("machine", ALL)
def test_boot_page_in_original_scratch_fails(machine: str) -> None:
    m = MACHINES[machine]
    cur, prev = handover(m)
    page = Range(6 * GIB, GIB)  # holds the global area
    result = judge("hugetlb-boot-outside-scratch", with_hugetlb(cur, [hugepage(page, "boot", m)]))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == page
    assert str(AREAS[1]) in ev.what
    other = "+unpreserved" if m.generation != "7.3" else "+extended"
    assert ev.klass == "partly original" + (other if m.keep else "")


@pytest.mark.parametrize("machine", ALL)
def test_page_of_unknown_origin_in_original_scratch_fails(machine: str) -> None:
    # Memblock discarded and no boot log: boot or buddy, both must avoid kho_scratch[].
    m = MACHINES[machine]
    cur, _ = handover(m)
    inside, outside = Range(6 * GIB, GIB), Range(11 * GIB, GIB)
    pages = [hugepage(inside, "unknown", m), hugepage(outside, "unknown", m)]
    result = judge("hugetlb-boot-outside-scratch", with_hugetlb(cur, pages))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == inside and "kho_scratch[]" in ev.what
    assert ev.owner.startswith("hugetlb page of unknown origin (1024 MiB")
    assert "2 of unknown origin" in judge(
        "hugetlb-boot-outside-scratch", with_hugetlb(cur, pages[1:] * 2)).reason


@pytest.mark.parametrize("machine", ["series-v1", "unpreserved"])
def test_boot_page_in_scratch_flagged_memory_fails_on_flag_kernels(machine: str) -> None:
    # There KHO_SCRATCH marks only the array; a boot page must avoid all of it.
    m = MACHINES[machine]
    cur, _ = handover(m)
    unp = UNPRESERVED_FLAG[m.generation]
    flagged = {"KHO_SCRATCH": [*m.areas, Range(13 * GIB, GIB)],
               unp: list(RangeSet([Range(GIB, 3 * GIB), Range(5 * GIB, 4 * GIB),
                                   Range(11 * GIB, 5 * GIB)]) - RangeSet(m.areas)
                         - RangeSet([Range(13 * GIB, GIB)]))}
    result = judge("hugetlb-boot-outside-scratch", with_memory(cur, m, flagged))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == Range(13 * GIB, GIB)
    assert "memory flagged KHO_SCRATCH" in ev.what
    # The memory flag and the boot page's reservation flags, by value.
    assert ev.flags == m.names("RSRV_NOINIT", "RSRV_KERN", "KHO_SCRATCH", "RSRV_HUGETLB")


def test_the_same_flags_pass_on_73() -> None:
    # On 7.3 the extension is KHO_SCRATCH too: a boot page there is right.
    cur, _ = handover(MACHINES["7.3"])
    assert judge("hugetlb-boot-outside-scratch", cur).status == "pass"


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_boot_page_outside_extended_scratch_fails(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    page = Range(4 * GIB, GIB)  # a busy block: not flagged
    result = judge("hugetlb-boot-in-extended", with_hugetlb(cur, [hugepage(page, "boot", m)]))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == page
    unp = UNPRESERVED_FLAG[m.generation]
    assert f"is not in memory flagged {unp or 'KHO_SCRATCH outside kho_scratch[]'}" in ev.what
    assert ev.klass == "other"


@pytest.mark.parametrize("machine", ALL)
def test_boot_page_in_a_busy_block_fails_without_memblock_too(machine: str) -> None:
    m = MACHINES[machine]
    cur, prev = handover(m)
    page = Range(9 * GIB, GIB)  # N preserved 64 KiB at 9 GiB
    result = judge("hugetlb-boot-unpreserved-blocks",
                   with_hugetlb(cur, [hugepage(page, "boot", m)]), prev)
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == page
    assert ev.what.endswith("touches ([0x240000000-0x27fffffff])")
    assert judge("hugetlb-boot-unpreserved-blocks", cur).reason.startswith("needs --previous")


@pytest.mark.parametrize("machine", ALL)
def test_runtime_pages_fail_in_scratch_and_outside_cma(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    buddy = Range(5 * GIB, GIB)             # holds the node 0 area
    stray = Range(11 * GIB, GIB)            # a CMA page outside every CMA area
    cur = with_hugetlb(cur, [hugepage(buddy, "buddy", m), hugepage(stray, "cma", m)])
    result = judge("hugetlb-runtime-outside-scratch", cur)
    assert result.status == "fail"
    assert ranges(result.evidence) == [buddy, stray]
    assert "lies in kho_scratch[]" in result.evidence[0].what
    assert "outside every hugetlb CMA area" in result.evidence[1].what


@pytest.mark.parametrize("machine", ALL)
def test_hugetlb_cma_area_over_scratch_fails(machine: str) -> None:
    # The known hole: hugetlb_cma= on a KHO boot gets no scratch avoidance.
    m = MACHINES[machine]
    cur, _ = handover(m)
    area = Range(12 * GIB, GIB) if m.numa else Range(5 * GIB, GIB)
    result = judge("hugetlb-cma-vs-scratch", with_hugetlb(cur, cma_areas=[cma_area(area, m)]))
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == area
    assert ev.owner == "hugetlb CMA area" + (" of node 1" if m.numa else "")
    assert str(AREAS[3] if m.numa else AREAS[2]) in ev.what


@pytest.mark.parametrize("machine", ALL)
def test_scratch_sizing_counts_hugetlb_cma_on_a_cold_boot(machine: str) -> None:
    m = MACHINES[machine]
    area = Range(6 * GIB + GIB, GIB)
    snap = with_hugetlb(cold(m), cma_areas=[cma_area(area, m)])
    result = judge("scratch-sizing-hugetlb", snap)
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == area
    assert ev.found == 4 * GIB  # twice 200% of 1 GiB
    explicit = replace(snap, command_line="kho=on kho_scratch=256M,1G,256M")
    assert judge("scratch-sizing-hugetlb", explicit).status == "pass"
    scaled = replace(snap, command_line="kho=on kho_scratch=50%")
    assert judge("scratch-sizing-hugetlb", scaled).evidence[0].found == GIB


def test_scratch_sizing_prefers_the_activation_inputs_and_skips_kho_boots() -> None:
    m = MACHINES["7.3"]
    snap = with_hugetlb(cold(m), cma_areas=[cma_area(Range(7 * GIB, GIB), m)])
    act = KhoActivation("disabled", "x", "kho=on", sizing=ScratchSizing("scale", 100))
    assert judge("scratch-sizing-hugetlb", replace(snap, activation=act)).evidence[0].found == (
        2 * GIB)
    off = replace(snap, activation=KhoActivation("not requested", "no kho=on"))
    assert judge("scratch-sizing-hugetlb", off).status == "skip"
    cur, _ = handover(m)
    assert judge("scratch-sizing-hugetlb", cur).reason.startswith("this kernel inherited")

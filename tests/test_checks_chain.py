# SPDX-License-Identifier: LGPL-2.1-or-later
"""The activation, chain, placement and memblock rules, failing: KHO requested
but off (with the kernel's log lines and the sizing inputs), a lost handover,
wrong chain metadata, kexec segments and early allocations outside scratch,
and malformed memblock arrays."""

from dataclasses import replace

import pytest
from synth.snapshot import (
    AREAS,
    GIB,
    IMAGE,
    KERN_ALLOC,
    MACHINES,
    MIB,
    SCRATCH_PHYS,
    bootlog,
    cold,
    handover,
    judge,
    ranges,
    with_reserved,
)

from kho_inspect.fdt import KexecMetadata
from kho_inspect.model.diagnosis import KhoActivation, ScratchNeed, ScratchSizing, SizingDriver
from kho_inspect.model.memblock import Region
from kho_inspect.ranges import Range

ALL = list(MACHINES)
WITH_MEMBLOCK = ["7.3", "series-v1", "unpreserved", "no-numa"]

LOG = ("KHO: Failed to reserve global scratch buffer",
       "KHO: Failed to reserve scratch area, disabling kexec handover")


def _disabled() -> KhoActivation:
    # The 8 GiB guest booted with kho=on hugetlb_cma=2G (issue 8, item 4).
    sizing = ScratchSizing(
        mode="scale", scale=200, kern_reserved=2 * GIB + 280 * MIB, hugetlb_reserved=0,
        memory=8 * GIB,
        needs=(ScratchNeed("array", 64, None, True), ScratchNeed("lowmem", 212 * MIB, None, True,
                                                              0x7000_0000),
               ScratchNeed("global", 4557 * MIB, 3 * GIB, False)),
        drivers=(SizingDriver("hugetlb_cma node 0", 2 * GIB, True, 2 * GIB, 0),
                 SizingDriver("hugetlb boot pages", GIB, False)),
        source="kernel log and memblock.reserved")
    return KhoActivation("disabled", "kho_reserve_scratch() could not reserve the 4557 MiB "
                         "global scratch area", "kho=on on the command line", LOG, sizing,
                         luo=False)


# --- kho-active ----------------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_kho_requested_but_disabled_fails_with_log_and_sizing(machine: str) -> None:
    snap = replace(cold(MACHINES[machine]), activation=_disabled(), scratch=None,
                   missing={"scratch": "KHO is not active on this kernel"})
    result = judge("kho-active", snap)
    assert result.status == "fail"
    first, glob, total, cma = result.evidence
    assert first.lines == LOG
    assert (first.expected, first.found) == ("active", "disabled")
    assert "LUO is off with it" in first.what
    assert (glob.owner, glob.expected, glob.found) == ("scratch global", 4557 * MIB, 3 * GIB)
    assert "needed 4557 MiB" in glob.what and "offered 3072 MiB" in glob.what
    assert total.what.startswith("the scratch areas needed 4769 MiB together, 58% of the 8192")
    assert cma.range == Range(2 * GIB, 2 * GIB)
    assert cma.owner == "hugetlb_cma node 0"
    assert "adding 4096 MiB" in cma.what
    assert result.reason.startswith("kho_reserve_scratch() could not reserve")


def test_kho_active_skips_when_not_built_or_not_requested() -> None:
    snap = cold()
    built = replace(snap, activation=KhoActivation("not built", "no kho_out"))
    assert judge("kho-active", built).reason == (
        "this kernel was built without CONFIG_KEXEC_HANDOVER")
    quiet = replace(snap, activation=KhoActivation("not requested", "no kho=on"))
    assert judge("kho-active", quiet).reason.endswith("no kho=on")
    unknown = replace(snap, activation=None, missing={"activation": "no printk buffer"})
    assert judge("kho-active", unknown).reason.endswith("no printk buffer")


# --- handover-received -----------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_lost_handover_fails(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    assert cur.status is not None
    lost = replace(cur, status=replace(cur.status, kho_boot=False),
                   activation=replace(cur.activation, log=("KHO: disabling KHO revival",)))
    result = judge("handover-received", lost, prev)
    assert result.status == "fail"
    assert result.evidence[0].lines == ("KHO: disabling KHO revival",)
    assert "7.3.4-n0 had KHO active" in result.evidence[0].what


def test_handover_received_skips_when_n_had_no_kho() -> None:
    cur, prev = handover()
    off = replace(prev, activation=KhoActivation("not requested", "no kho=on"))
    assert judge("handover-received", cur, off).reason.startswith("the previous kernel")


# --- handover-abi ------------------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_handover_abi_fails_on_compatible_and_metadata(machine: str) -> None:
    cur, _ = handover(MACHINES[machine])
    assert cur.fdt_in is not None and cur.fdt_out is not None and cur.status is not None
    cur = replace(cur, fdt_in=replace(cur.fdt_in, compatible="kho-v3",
                                      kexec_metadata=KexecMetadata(1, "7.3.4-n0", 7)),
                  fdt_out=replace(cur.fdt_out, kexec_metadata=KexecMetadata(1, "other", 9)))
    result = judge("handover-abi", cur)
    assert result.status == "fail"
    assert [(e.expected, e.found) for e in result.evidence] == [
        ("kho-v4", "kho-v3"), ((7, "7.3.4-n0"), (1, "7.3.4-n0")), (2, 9),
        ("7.3.4-n1", "other")]


# --- chain-metadata ------------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_chain_metadata_fails_against_the_previous_snapshot(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    assert cur.status is not None and cur.fdt_in is not None
    cur = replace(cur, status=replace(cur.status, kexec_count=3, previous_release="7.2"),
                  fdt_in=replace(cur.fdt_in, mem_map_phys=0x1234_5000))
    result = judge("chain-metadata", cur, prev)
    assert result.status == "fail"
    assert [(e.owner, e.expected, e.found) for e in result.evidence] == [
        ("kho_in.kexec_count", 1, 3), ("kho_in.previous_release", "7.3.4-n0", "7.2"),
        ("incoming root FDT", hex(10 * GIB), "0x12345000")]
    assert "not from the kernel that kexec'd into this one" in result.evidence[2].what


# --- image-in-scratch ------------------------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_kexec_segments_outside_scratch_fail(machine: str) -> None:
    cur, _ = handover(MACHINES[machine])
    assert cur.status is not None
    image = Range(AREAS[0].end - 16 * MIB, 32 * MIB)  # straddles the lowmem area's end
    cur = replace(cur, image=image, initrd=Range(3 * GIB, 8 * MIB),
                  status=replace(cur.status, scratch_in_phys=4 * GIB))
    result = judge("image-in-scratch", cur)
    assert result.status == "fail"
    assert ranges(result.evidence) == [image, Range(3 * GIB, 8 * MIB),
                                       Range(4 * GIB, 16 * len(cur.scratch.areas))]
    assert [e.owner for e in result.evidence] == [
        "kernel image", "initrd", "scratch array (kho_in.scratch_phys)"]
    assert result.evidence[0].what.endswith("at [0x80000000-0x80ffffff]")


def test_image_in_scratch_says_what_is_unknown() -> None:
    cur, _ = handover()
    cur = replace(cur, initrd=None, missing={"initrd": "the initrd was freed after boot"})
    result = judge("image-in-scratch", cur)
    assert result.status == "pass"
    assert result.reason.endswith("not known: initrd (the initrd was freed after boot)")


# --- boot-allocations-in-scratch -----------------------------------------------------


@pytest.mark.parametrize("machine", ALL)
def test_early_allocation_outside_scratch_fails(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    bad = Range(4 * GIB + 600 * MIB, 2 * MIB)  # a busy block
    log = bootlog((KERN_ALLOC, "alloc_node_data"), (bad, "sparse_init"))
    result = judge("boot-allocations-in-scratch", cur, prev, log)
    assert result.status == "fail"
    (ev,) = result.evidence
    assert ev.range == bad
    assert ev.owner == "memblock_alloc_try_nid for sparse_init"
    assert "(log line 11)" in ev.what
    assert ev.klass == "other"
    if not MACHINES[machine].keep:
        assert ev.flags == ("RSRV_KERN",)  # from the log
        assert "1 GiB blocks free of the previous kernel's preserved memory" in result.reason


def test_boot_allocations_skip() -> None:
    cur, prev = handover(MACHINES["discarded"])
    log = bootlog((IMAGE, "x"))
    assert judge("boot-allocations-in-scratch", cur, None, log).reason.startswith(
        "memblock not kept on this kernel and no --previous")
    no_window = replace(log, window=None)
    assert "no 'KHO: found kexec handover data.' line" in judge(
        "boot-allocations-in-scratch", cur, prev, no_window).reason
    assert judge("boot-allocations-in-scratch", cur, prev, replace(
        log, window=replace(log.window, closed=False))).reason.endswith(
        "(the log stops inside the window)")
    # A log recorded without memblock=debug has a window but no allocation: a skip,
    # never a pass over nothing.
    quiet = replace(log, allocations=())
    result = judge("boot-allocations-in-scratch", cur, prev, quiet)
    assert result.status == "skip" and "no memblock=debug lines" in result.reason


# --- memblock-sane ---------------------------------------------------------------------


@pytest.mark.parametrize("machine", WITH_MEMBLOCK)
def test_memblock_sane_fails_on_unmerged_overlapping_and_overfull(machine: str) -> None:
    m = MACHINES[machine]
    cur, _ = handover(m)
    assert cur.memblock is not None
    regions = [Region(GIB, MIB, ("RSRV_KERN",)), Region(GIB + MIB, MIB, ("RSRV_KERN",)),
               Region(3 * GIB, 2 * MIB), Region(3 * GIB + MIB, MIB)]
    broken = with_reserved(cur, m, regions)
    broken = replace(broken, kho_scratch_only=True, memblock=replace(
        broken.memblock, types=dict(broken.memblock.types, reserved=replace(
            broken.memblock.reserved, cnt=200, max=128))))
    result = judge("memblock-sane", broken)
    assert result.status == "fail"
    what = [e.what for e in result.evidence]
    assert what[0] == "memblock.reserved.cnt 200 exceeds max 128"
    assert "touch with the same node and flags but were not merged" in what[1]
    assert result.evidence[1].range == Range(GIB + MIB, MIB)
    assert result.evidence[2].range == Range(3 * GIB + MIB, MIB)
    assert what[2].endswith("overlap")
    assert result.evidence[3].owner == "kho_scratch_only"


def test_memblock_sane_skips_where_memblock_is_discarded() -> None:
    cur, _ = handover(MACHINES["discarded"])
    assert judge("memblock-sane", cur).reason.startswith("memblock not kept on this kernel")


def test_scratch_array_is_found_by_its_symbol() -> None:
    cur, _ = handover()
    assert cur.status is not None and cur.status.scratch_in_phys == SCRATCH_PHYS


def test_early_allocation_in_the_x86_first_mib_is_allowed() -> None:
    # reserve_real_mode() allocates there, then clears the scratch flag.
    cur, prev = handover()
    log = bootlog((Range(0x9_0000, 0x1_0000), "reserve_real_mode"))
    assert judge("boot-allocations-in-scratch", cur, prev, log).status == "pass"
    assert judge("boot-allocations-in-scratch", replace(cur, arch="aarch64"), prev,
                 log).status == "fail"


def test_kho_off_in_a_kdump_kernel_is_no_failure() -> None:
    act = KhoActivation("disabled", "KHO disabled itself in the kdump kernel", "kho=on",
                        ("KHO: disabled in the kdump kernel",))
    result = judge("kho-active", replace(cold(), activation=act))
    assert result.status == "skip"
    assert "kdump" in result.reason

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The memblock=debug parser: pairing, window, flags by name, classification."""

import json
from pathlib import Path

from kho_inspect.bootlog import classify_allocations, parse_bootlog
from kho_inspect.model import FlagTable
from kho_inspect.model.bootlog import BootLog
from kho_inspect.ranges import Range, RangeSet

# enum memblock_flags of Linux 7.3 and of the v1 series: 0x80 is not the same flag.
FLAGS_73 = FlagTable({"NONE": 0, "HOTPLUG": 1, "MIRROR": 2, "NOMAP": 4, "DRIVER_MANAGED": 8,
                      "RSRV_NOINIT": 0x10, "RSRV_KERN": 0x20, "KHO_SCRATCH": 0x40,
                      "RSRV_HUGETLB": 0x80})
FLAGS_V1 = FlagTable({"NONE": 0, "RSRV_KERN": 0x20, "KHO_SCRATCH": 0x40, "KHO_SCRATCH_EXT": 0x80})

GIB = 1 << 30

FIXTURES = Path(__file__).parent / "fixtures" / "bootlog"

# Lines in the kernel's formats (mm/memblock.c, Linux 7.3): %pa prints 0x + 16 digits,
# the end of [%pa-%pa] is inclusive, flags=%x has no 0x prefix.
LOG = (FIXTURES / "synthetic-7.3.txt").read_text()


def test_window_and_pairs() -> None:
    boot = parse_bootlog(LOG, FLAGS_73)
    assert boot.window is not None
    assert (boot.window.start_line, boot.window.end_line, boot.window.closed) == (4, 13, True)
    assert not boot.truncated
    by_line = {a.line: a for a in boot.allocations}
    first = by_line[6]
    assert (first.phys, first.size, first.caller, first.request, first.nid) == (
        0x13FFFF000, 4096, "alloc_node_data", "memblock_alloc_try_nid", 0)
    assert first.flags == ("RSRV_KERN",) and first.in_window and first.is_allocation
    preserved = by_line[7]
    assert not preserved.is_allocation and preserved.caller == "kho_preserved_memory_reserve"
    huge = by_line[9]
    assert (huge.phys, huge.size, huge.caller, huge.request) == (
        0x180000000, GIB, "alloc_bootmem", "memblock_alloc_hugetlb")
    assert huge.flags == ("RSRV_KERN", "RSRV_HUGETLB") and huge.flags_value == 0xA0
    # The phys_alloc_range request never got its reservation line: it is reported,
    # and the following request is paired with the next result.
    assert len(boot.unpaired) == 1 and "reserve_real_mode" in boot.unpaired[0]
    assert by_line[12].caller == "pcpu_alloc_alloc_info" and by_line[12].size == 0x10000
    # Before the window (setup_arch) and after it (late_thing) are not in it.
    assert not by_line[3].in_window and not by_line[15].in_window
    assert [a.line for a in boot.in_window()] == [6, 9, 12]


def test_flag_names_come_from_the_table() -> None:
    huge = [a for a in parse_bootlog(LOG, FLAGS_V1).allocations if a.flags_value == 0xA0][0]
    assert huge.flags == ("RSRV_KERN", "KHO_SCRATCH_EXT")
    raw = [a for a in parse_bootlog(LOG).allocations if a.flags_value == 0xA0][0]
    assert raw.flags == ("0x20", "0x80")


def test_cold_boot_has_no_window_and_open_window() -> None:
    cold = parse_bootlog(LOG.replace("KHO: found kexec handover data.", "KHO: nothing"))
    assert cold.window is None and not cold.in_window()
    cut = "\n".join(LOG.splitlines()[:9])
    boot = parse_bootlog(cut, FLAGS_73)
    assert boot.window is not None and not boot.window.closed and boot.window.end_line == 9


def test_truncated_log() -> None:
    assert parse_bootlog("\n".join(LOG.splitlines()[3:])).truncated


def test_classification() -> None:
    boot = parse_bootlog(LOG, FLAGS_73)
    classes = [("original", RangeSet([Range(0x100000000, GIB)])),
               ("extended", RangeSet([Range(0x180000000, GIB)]))]
    by_line = {a.line: a.klass for a in classify_allocations(boot, classes).allocations}
    assert by_line[6] == "original" and by_line[9] == "extended" and by_line[12] == "other"


def test_json_round_trip() -> None:
    boot = classify_allocations(parse_bootlog(LOG, FLAGS_73), [])
    assert BootLog.from_json(json.loads(json.dumps(boot.to_json()))) == boot


# --- real logs: Linux 7.3.4 in the lab, booted with memblock=debug ------------------------
# tests/fixtures/bootlog/lab-7.3.4/: n0 (cold boot) and n1 (KHO boot) dmesg of one lab run
# (hugepagesz=1G hugepages=2 memblock=debug log_buf_len=8M), with the same kernels'
# debugfs memblock/{memory,reserved} and kho/out/scratch_{phys,len} as the oracle.

LAB = FIXTURES / "lab-7.3.4"


def _lab_log(stage: str) -> str:
    import gzip

    return gzip.decompress((LAB / f"{stage}-dmesg.txt.gz").read_bytes()).decode()


def _lab_regions(stage: str, mtype: str, flag: str) -> RangeSet:
    # debugfs lines: "   3: 0x0000000100000000..0x000000013fffffff    0 KHO_SCRATCH"
    out = []
    for line in (LAB / stage / mtype).read_text().splitlines():
        span, _, names = line.split()[1:4] if len(line.split()) >= 4 else (None, None, "")
        if span and flag in names.split("|"):
            first, last = (int(x, 16) for x in span.split(".."))
            out.append(Range(first, last - first + 1))
    return RangeSet(out)


def _lab_scratch(stage: str) -> RangeSet:
    phys = [int(x, 16) for x in (LAB / stage / "scratch_phys").read_text().split()]
    size = [int(x, 16) for x in (LAB / stage / "scratch_len").read_text().split()]
    return RangeSet(Range(p, s) for p, s in zip(phys, size))


def test_real_cold_boot_has_no_window() -> None:
    boot = parse_bootlog(_lab_log("n0"), FLAGS_73)
    assert boot.window is None and not boot.truncated
    huge = RangeSet(a.range for a in boot.allocations if "RSRV_HUGETLB" in a.flags)
    assert huge == _lab_regions("n0", "reserved", "RSV_HUGETLB")


def test_real_kho_boot_window_pairs_and_hugetlb() -> None:
    boot = parse_bootlog(_lab_log("n1"), FLAGS_73)
    assert boot.window is not None and boot.window.closed and not boot.truncated
    allocations = boot.in_window()
    assert len(allocations) > 50 and not boot.unpaired
    # The flags=a0 pairs are the two 1 GiB boot pages: what debugfs shows as RSV_HUGETLB.
    huge = [a for a in boot.allocations if a.flags_value == 0xA0]
    assert [(a.size, a.request, a.flags) for a in huge] == [
        (GIB, "memblock_alloc_hugetlb", ("RSRV_KERN", "RSRV_HUGETLB"))] * 2
    assert all(a.in_window for a in huge)
    assert RangeSet(a.range for a in huge) == _lab_regions("n1", "reserved", "RSV_HUGETLB")
    # Every allocation of the scratch-only window lies in KHO_SCRATCH memory; the 1 GiB
    # pages lie outside the original scratch areas.
    scratch_memory = _lab_regions("n1", "memory", "KHO_SCRATCH")
    assert all(scratch_memory.covers(a.range) for a in allocations)
    assert not RangeSet(a.range for a in huge).overlaps(_lab_scratch("n1"))
    classes = [("original", _lab_scratch("n1")),
               ("extended", scratch_memory - _lab_scratch("n1"))]
    kinds = {a.klass for a in classify_allocations(boot, classes).in_window()}
    assert kinds == {"original", "extended"}


def _naive_class(rng: Range, classes) -> str:
    touched = []
    for name, ranges in classes:
        if ranges.covers(rng):
            return name
        if ranges.overlaps(rng):
            touched.append(name)
    return "partly " + "+".join(touched) if touched else "other"


def test_classification_equals_set_algebra() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kho_inspect.bootlog import classify_range

    span = st.tuples(st.integers(0, 1 << 16), st.integers(1, 1 << 12))
    sets = st.lists(span, max_size=8).map(lambda xs: RangeSet(Range(b, s) for b, s in xs))

    @settings(max_examples=400, deadline=None)
    @given(classes=st.lists(sets, min_size=1, max_size=3), rng=span)
    def check(classes, rng) -> None:
        named = [(f"c{i}", c) for i, c in enumerate(classes)]
        r = Range(*rng)
        assert classify_range(r, named) == _naive_class(r, named)

    check()

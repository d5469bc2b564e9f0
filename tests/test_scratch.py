# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho scratch: pageblock usemaps, roles, classes per kernel generation, cost accounting."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from synth.kernel import SynthKernel
from synth.kho import add_kho
from synth.mm import FLAGS_73, FLAGS_UNPRESERVED, FLAGS_V1, MmSpec, add_mm, memory_regions
from synth.mm import memblock_state as make_state

from kho_inspect import scratch as scratch_module
from kho_inspect.cli import Session, run
from kho_inspect.errors import EXIT_CANNOT_INSPECT, StaleMemblockError
from kho_inspect.model import Region
from kho_inspect.model.pageblock import (
    NO_MEMMAP,
    PageblockLayout,
    PageblockRun,
    merge_runs,
    migratetype_bytes,
    runs_in_section,
)
from kho_inspect.model.scratch import area_roles, classify, node_use
from kho_inspect.pageblock import _pageblock_masks, pageblock_layout
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.scratch import scratch_report

GB = 1 << 30
MB = 1 << 20

NAMES = {0: "UNMOVABLE", 1: "MOVABLE", 2: "RECLAIMABLE", 3: "HIGHATOMIC", 4: "CMA"}

ARRAY = RangeSet([Range(64 * MB, 64 * MB), Range(3 * GB, 256 * MB), Range(5 * GB, 128 * MB)])


def test_roles_follow_kho_reserve_scratch_order():
    assert area_roles(5, [0, 2]) == [("lowmem", None), ("global", None), ("node 0", 0),
                                     ("node 2", 2), ("node ?", None)]


def test_73_extended_is_kho_scratch_minus_the_array():
    memory = [
        Region(0, 2 * GB, ("KHO_SCRATCH",), 0),  # first 1 GiB block free, array inside
        Region(2 * GB, 2 * GB, ("KHO_SCRATCH",), 0),
        Region(4 * GB, 4 * GB, (), 1),
        Region(5 * GB, 128 * MB, ("KHO_SCRATCH",), 1),
    ]
    classes = classify(ARRAY, memory, FLAGS_73)
    assert classes.unpreserved_flag is None and classes.scratch_flag == "KHO_SCRATCH"
    assert classes.extended == RangeSet([Range(0, 4 * GB)]) - ARRAY
    assert not classes.unpreserved


def test_v1_series_unpreserved_is_the_ext_flag():
    memory = [
        Region(0, 1 * GB, ("KHO_SCRATCH",), 0),
        Region(1 * GB, 1 * GB, ("KHO_SCRATCH_EXT",), 0),
        Region(3 * GB, 256 * MB, ("KHO_SCRATCH",), 0),
    ]
    classes = classify(ARRAY, memory, FLAGS_V1)
    assert classes.unpreserved_flag == "KHO_SCRATCH_EXT"
    assert classes.unpreserved == RangeSet([Range(1 * GB, 1 * GB)])
    assert classes.extended == classes.unpreserved
    assert not classes.overlap


def test_unpreserved_flag_overlapping_the_array_is_reported():
    memory = [Region(0, 1 * GB, ("KHO_SCRATCH", "KHO_UNPRESERVED"), 0)]
    classes = classify(ARRAY, memory, FLAGS_UNPRESERVED)
    assert classes.unpreserved_flag == "KHO_UNPRESERVED"
    assert classes.overlap == RangeSet([Range(64 * MB, 64 * MB)])
    assert classes.extended == classes.unpreserved - ARRAY


def test_node_use_counts_ram_scratch_and_free_per_node():
    memory = [Region(0, 4 * GB, (), 0), Region(4 * GB, 4 * GB, (), 1)]
    classes = classify(ARRAY, memory, FLAGS_73)
    free = RangeSet([Range(3 * GB, 64 * MB), Range(6 * GB, GB)])  # outside scratch ignored
    rows, total = node_use(classes, memory, free)
    assert [(n.node, n.ram, n.original, n.free, n.used) for n in rows] == [
        (0, 4 * GB, 320 * MB, 64 * MB, 256 * MB),
        (1, 4 * GB, 128 * MB, 0, 128 * MB),
    ]
    assert total.original == 448 * MB and total.share == 448 * MB / (8 * GB)


# --- pageblock usemaps ----------------------------------------------------


def layout(nr_bits: int = 8, iso: int = 0x10, byteorder: str = "little") -> PageblockLayout:
    # x86_64 7.3: 128 MiB sections, 2 MiB pageblocks, PB_migrate_isolate = bit 4.
    return PageblockLayout(12, 27, 9, nr_bits, 0x7, iso, NAMES, byteorder)


def usemap8(values):
    return bytes(values) + bytes(64 - len(values))


def test_block_codes_8_bits_mask_compact_skip_and_flag_isolate():
    lay = layout()
    codes = lay.block_codes(usemap8([4, 4 | 0x8, 4 | 0x10, 1]))
    assert codes[:4] == [4, 4, 4 | 0x100, 1]
    assert len(codes) == 64 and lay.name(codes[2]) == "CMA"


def test_block_codes_4_bits_pack_two_blocks_per_byte():
    # Kernels without PB_migrate_isolate: NR_PAGEBLOCK_BITS = 4, MIGRATE_ISOLATE a value.
    lay = layout(nr_bits=4, iso=0)
    raw = bytes([0x41, 0x05]) + bytes(30)
    assert lay.usemap_bytes == 32
    assert lay.block_codes(raw)[:4] == [1, 4, 5, 0]


def test_block_codes_big_endian_words_are_swapped():
    little = usemap8([4, 1])
    big = b"".join(little[i:i + 8][::-1] for i in range(0, 64, 8))
    assert layout(byteorder="big").block_codes(big) == layout().block_codes(little)


def test_runs_are_clipped_to_the_range_and_grouped():
    lay = layout()
    codes = [4] * 10 + [1] * 54
    rng = Range(0x100000, 30 * MB)  # starts inside block 0, ends inside block 15
    runs = runs_in_section(lay, 0, codes, rng)
    assert runs == [PageblockRun(0x100000, 20 * MB - 0x100000, "CMA"),
                    PageblockRun(20 * MB, 0x100000 + 30 * MB - 20 * MB, "MOVABLE")]


def test_a_section_without_usemap_is_one_no_memmap_run():
    lay = layout()
    assert runs_in_section(lay, 0, None, Range(0, 4 * MB)) == [
        PageblockRun(0, 4 * MB, NO_MEMMAP)]


def test_merge_runs_joins_touching_runs_of_one_type_only():
    a = PageblockRun(0, 2 * MB, "CMA")
    b = PageblockRun(2 * MB, 2 * MB, "CMA")
    c = PageblockRun(4 * MB, 2 * MB, "CMA", isolated=True)
    assert merge_runs([a, b, c]) == [PageblockRun(0, 4 * MB, "CMA"), c]
    assert migratetype_bytes([a, b, c]) == {"CMA": 6 * MB}


@given(st.lists(st.sampled_from([0, 1, 4, 4 | 0x10]), min_size=64, max_size=64),
       st.integers(0, (128 * MB) - 1), st.integers(1, 128 * MB))
def test_runs_cover_exactly_the_clipped_range(values, base, size):
    lay = layout()
    rng = Range(base, min(size, 128 * MB - base))
    runs = runs_in_section(lay, 0, lay.block_codes(usemap8(values)), rng)
    assert runs[0].base == rng.base and runs[-1].end == rng.end
    assert all(x.end == y.base for x, y in zip(runs, runs[1:]))
    assert sum(r.size for r in runs) == rng.size


# --- synthetic kernels: the generations -------------------------------------

NODES = [(0, 4 * GB), (4 * GB, 8 * GB)]
AREAS = [(64 * MB, 64 * MB), (3 * GB, 256 * MB), (2 * GB, 128 * MB), (5 * GB, 128 * MB)]
EXTENSION = [(6 * GB, 8 * GB)]  # the 1 GiB blocks kho_extend_scratch() found free
AREA_SET = RangeSet(Range(a, s) for a, s in AREAS)
EXT_SET = RangeSet([Range(6 * GB, 2 * GB)])


def synth(flags=FLAGS_73, ext_flag="KHO_SCRATCH", kho_boot=True, **spec):
    """A two-node kernel (KHO-booted by default); ``ext_flag`` marks the extension blocks."""
    kernel = SynthKernel(ram_size=8 * GB)
    add_mm(kernel, MmSpec(NODES, spec.pop("scratch", AREAS), **spec))
    add_kho(kernel, kho_boot=kho_boot)
    flagged = {"KHO_SCRATCH": [(a, a + s) for a, s in AREAS]}
    flagged.setdefault(ext_flag, []).extend(EXTENSION)
    return kernel.prog, make_state(memory_regions(NODES, flagged), flags=flags)


def test_73_extended_is_flagged_minus_array_cma_only_on_the_array():
    prog, state = synth()
    report = scratch_report(prog, memblock=state)
    c = report.classes
    assert (c.original, c.extended, c.unpreserved) == (AREA_SET, EXT_SET, RangeSet())
    mts = report.to_json()["migratetype"]
    assert mts["original"]["bytes"] == {"CMA": AREA_SET.total}
    assert mts["extended"]["bytes"] == {"MOVABLE": 2 * GB}
    assert [a.role for a in report.areas] == ["lowmem", "global", "node 0", "node 1"]
    assert report.notes == ()


@pytest.mark.parametrize("flags, flag", [(FLAGS_V1, "KHO_SCRATCH_EXT"),
                                         (FLAGS_UNPRESERVED, "KHO_UNPRESERVED")])
def test_series_generations_take_unpreserved_from_their_flag(flags, flag):
    prog, state = synth(flags, flag)
    report = scratch_report(prog, memblock=state)
    c = report.classes
    assert c.unpreserved_flag == flag
    assert c.unpreserved == EXT_SET and c.extended == EXT_SET and c.original == AREA_SET
    assert report.to_json()["migratetype"]["unpreserved"]["bytes"] == {"MOVABLE": 2 * GB}
    assert [r.flags for r in report.flagged].count((flag,)) == 1


def test_bootmem_spelling_is_found_and_named():
    prog, state = synth(scratch_names=("kho_bootmem", "kho_bootmem_cnt"))
    report = scratch_report(prog, memblock=state)
    assert report.to_json()["symbols"] == {"array": "kho_bootmem", "count": "kho_bootmem_cnt"}
    assert report.classes.original == AREA_SET


def test_cma_in_extended_and_movable_in_original_are_noted():
    prog, state = synth(migratetypes=[(6 * GB, 6 * GB + 4 * MB, "CMA"),
                                      (3 * GB, 3 * GB + 2 * MB, "MOVABLE")])
    notes = " ".join(scratch_report(prog, memblock=state).notes)
    assert "2097152 bytes of original scratch are not MIGRATE_CMA (first at 0xc0000000" in notes
    assert "4194304 bytes of extended scratch are MIGRATE_CMA (first at 0x180000000)" in notes


def test_isolated_blocks_and_sections_without_usemap_show_up_as_runs():
    prog, state = synth(isolated=[(2 * GB, 2 * GB + 2 * MB)], holes=[(5 * GB, 5 * GB + 128 * MB)])
    runs = scratch_report(prog, memblock=state).runs["original"]
    assert runs[1] == PageblockRun(2 * GB, 2 * MB, "CMA", isolated=True)
    assert runs[-1] == PageblockRun(5 * GB, 128 * MB, NO_MEMMAP)


def test_in_use_is_scratch_minus_its_free_cma_blocks():
    free = [(3 * GB, 10), (3 * GB + 4 * MB, 10), (5 * GB, 9), (7 * GB, 10)]  # last: other CMA
    prog, state = synth(free_cma=free, other_cma={1: 64 * MB})
    report = scratch_report(prog, memblock=state)
    node0, node1 = report.nodes
    assert (node0.free, node0.used) == (8 * MB, 448 * MB - 8 * MB)
    assert (node1.free, node1.used) == (2 * MB, 126 * MB)
    assert report.total.share == AREA_SET.total / (8 * GB)
    cma = report.to_json()["cma"]
    assert cma["zone_cma_pages"] == {"0": 448 * MB, "1": 192 * MB}
    assert cma["nr_free_cma_pages"] == {"0": 8 * MB, "1": 6 * MB}


def test_pageblock_order_without_huge_pages_is_page_block_max_order():
    prog, _ = synth(thp=False)
    layout = pageblock_layout(prog)
    assert layout.pageblock_order == 10 and "no huge pages" in layout.pageblock_order_source


# --- the command ------------------------------------------------------------


def cli(prog, state, monkeypatch, *args):
    monkeypatch.setattr(scratch_module, "read_memblock", lambda p, **kw: state)
    return run(["kho", "scratch", *args], Session(program_=prog))


def test_cli_json_shape(monkeypatch, capsys):
    prog, state = synth(FLAGS_V1, "KHO_SCRATCH_EXT")
    assert cli(prog, state, monkeypatch, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["areas"][3] == {"index": 3, "addr": 5 * GB, "size": 128 * MB, "role": "node 1",
                               "node": 1, "memblock_nids": [1]}
    assert set(out["classes"]) == {"original", "extended", "unpreserved"}
    assert out["classes"]["unpreserved"] == [{"base": 6 * GB, "size": 2 * GB}]
    assert out["migratetype"]["original"]["bytes"] == {"CMA": AREA_SET.total}


def test_cli_text_shows_each_section(monkeypatch, capsys):
    prog, state = synth()
    assert cli(prog, state, monkeypatch) == 0
    out = capsys.readouterr().out
    for title in ("Scratch areas (kho_scratch[:kho_scratch_cnt])", "Scratch classes",
                  "Pageblock migratetypes", "What scratch costs"):
        assert title in out
    assert "Linux 7.3" in out and "total" in out


def test_cli_without_memblock_still_reports_the_array(monkeypatch, capsys):
    prog, _ = synth()

    def discarded(p, **kw):
        raise StaleMemblockError("memblock was discarded after boot (no ARCH_KEEP_MEMBLOCK).")

    monkeypatch.setattr(scratch_module, "read_memblock", discarded)
    assert run(["kho", "scratch", "--json"], Session(program_=prog)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["memblock"]["available"] is False and out["nodes"] == []
    assert out["total"]["ram"] == 8 * GB and out["total"]["original"] == AREA_SET.total
    assert out["migratetype"]["original"]["bytes"] == {"CMA": AREA_SET.total}
    assert "RAM is totalram" in out["notes"][0]


def test_cold_boot_has_no_flagged_memory():
    prog, state = synth(kho_boot=False)
    report = scratch_report(prog, memblock=make_state(memory_regions(NODES)))
    assert report.kho_boot is False and not report.classes.extended
    assert "extended scratch appears only in the next kernel" in report.notes[-1]
    report = scratch_report(prog, memblock=state)
    assert "cold booted, yet" in report.notes[-1]


def test_cli_kernel_without_kho_is_exit_2(monkeypatch, capsys):
    assert cli(SynthKernel().prog, None, monkeypatch) == EXIT_CANNOT_INSPECT
    assert "kho_scratch/kho_scratch_cnt, kho_bootmem/kho_bootmem_cnt" in capsys.readouterr().err


def test_cli_kho_disabled_is_exit_2(monkeypatch, capsys):
    prog, state = synth(scratch=[])
    assert cli(prog, state, monkeypatch) == EXIT_CANNOT_INSPECT
    assert "kho_scratch is empty" in capsys.readouterr().err


@pytest.mark.parametrize("bits, expected", [
    ({"PB_migrate_0": 0, "PB_migrate_1": 1, "PB_migrate_2": 2, "PB_compact_skip": 3,
      "PB_migrate_isolate": 4, "__NR_PAGEBLOCK_BITS": 5}, (8, 0x7, 0x10)),  # 7.3
    ({"PB_migrate": 0, "PB_migrate_end": 2, "PB_migrate_skip": 3,
      "NR_PAGEBLOCK_BITS": 4}, (4, 0x7, 0)),  # isolation still a migratetype value
])
def test_pageblock_bits_of_each_generation(bits, expected):
    assert _pageblock_masks(bits) == expected

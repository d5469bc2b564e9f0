# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho preserved: sources out, reserved, pages, snapshot, and the refusal of in."""

import json
import re
import struct

import pytest
from drgn import offsetof
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from radix_encoder import encode_khoser, poke_u64
from synth.kernel import SynthKernel
from synth.kho import add_kho
from synth.mm import (
    FLAGS_73,
    FLAGS_V1,
    MmSpec,
    add_kho_v1,
    add_mm,
    memory_regions,
    place_radix_tree,
)
from synth.mm import memblock_state as make_state

from kho_inspect import preserved as preserved_module
from kho_inspect.cli import Session, run
from kho_inspect.errors import EXIT_CANNOT_INSPECT, EXIT_USAGE, InputError, NotKhoKernelError
from kho_inspect.model import FlagTable, MemblockState, MemblockType, PreservedReport, Region
from kho_inspect.preserved import (
    KHO_PAGE_MAGIC,
    find_magic_heads,
    heads_to_report,
    load_snapshot,
    read_outgoing,
    read_pages,
    read_reserved,
    reserved_regions,
)
from kho_inspect.ranges import Range, RangeSet

PAGE = 4096
STRUCT_PAGE = 64
PRIVATE = 40  # offsetof(struct page, private) in Linux 7.3 x86_64


def struct_pages(privates, byteorder="little"):
    """Consecutive struct pages whose private fields hold ``privates``."""
    out = bytearray(STRUCT_PAGE * len(privates))
    for i, (order, magic) in enumerate(privates):
        fmt = "<II" if byteorder == "little" else ">II"
        struct.pack_into(fmt, out, i * STRUCT_PAGE + PRIVATE, order, magic)
    return bytes(out)


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_magic_heads_are_found_only_at_the_private_field(byteorder):
    data = bytearray(struct_pages([(0, 0), (9, KHO_PAGE_MAGIC), (0, 0), (0, KHO_PAGE_MAGIC)],
                                  byteorder))
    # The magic at another offset of a struct page is not a head.
    fmt = "<I" if byteorder == "little" else ">I"
    struct.pack_into(fmt, data, 2 * STRUCT_PAGE + 8, KHO_PAGE_MAGIC)
    heads = find_magic_heads(bytes(data), 0x100, struct_size=STRUCT_PAGE,
                             private_offset=PRIVATE, byteorder=byteorder)
    assert heads == [(0x101, 9), (0x103, 0)]


def test_heads_become_coalesced_ranges_and_bad_heads_a_note():
    heads = [(0x200, 9), (0x400, 9), (0x10, 0), (0x11, 0), (0x13, 2)]  # last: misaligned
    report = heads_to_report(heads, 12)
    assert report.ranges == ((0x200000, 4 << 20, 9), (0x10000, 0x2000, 0))
    assert report.histogram == {9: 2, 0: 2}
    assert "1 page(s)" in report.notes[0]


def _state(flags, reserved):
    return MemblockState(
        types={"memory": MemblockType("memory", (), 0, 0, 0),
               "reserved": MemblockType("reserved", tuple(reserved), len(reserved), 128, 0)},
        flags=FlagTable(flags),
    )


def test_reserved_keeps_noinit_and_drops_hugetlb():
    flags = {"RSRV_NOINIT": 0x10, "RSRV_KERN": 0x20, "RSRV_HUGETLB": 0x80}
    regions = [Region(0x1000, 0x1000, ("RSRV_NOINIT",)),
               Region(0x40000000, 0x40000000, ("RSRV_NOINIT", "RSRV_KERN", "RSRV_HUGETLB")),
               Region(0x90000000, 0x1000, ("RSRV_KERN",))]
    kept, notes = reserved_regions(_state(flags, regions))
    assert kept == regions[:1] and notes == []


def test_reserved_without_hugetlb_flag_says_so():
    kept, notes = reserved_regions(_state({"RSRV_NOINIT": 0x10, "KHO_SCRATCH_EXT": 0x80},
                                          [Region(0, 0x1000, ("RSRV_NOINIT",))]))
    assert len(kept) == 1 and "RSRV_HUGETLB" in notes[0]


def test_reserved_needs_noinit():
    with pytest.raises(NotKhoKernelError, match="RSRV_NOINIT"):
        reserved_regions(_state({"RSRV_KERN": 0x20}, []))


def test_snapshot_round_trips(tmp_path):
    report = PreservedReport("out", ((0x1000, 0x1000, 0),), (0x5000,), {0: 1}, root=0x5000,
                             kernel="7.3.4")
    path = tmp_path / "n.json"
    path.write_text(json.dumps(report.to_json()))
    back = load_snapshot(str(path))
    assert back.ranges == report.ranges and back.histogram == report.histogram
    assert back.origin == {"file": str(path), "source": "out", "kernel": "7.3.4"}


@pytest.mark.parametrize("text, match", [("not json", "not JSON"),
                                         ('{"ranges": []}', "not a snapshot"),
                                         ('{"source": "out", "ranges": [{"phys": 1}]}',
                                          "not a snapshot")])
def test_bad_snapshots_are_input_errors(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        load_snapshot(str(path))


# --- synthetic kernels ------------------------------------------------------

GB = 1 << 30
MB = 1 << 20
NODES = [(0, 2 * GB), (2 * GB, 4 * GB)]
TREE_BASE = 0xF000_0000  # radix pages: RAM that holds nothing preserved

# A mixed set: a 1 GiB block, 2 MiB folios, runs of pages that cross a leaf
# boundary (128 MiB of order-0 keys per leaf), a lone page.
BLOCKS = ([(GB, 18)] + [(0x8000_0000 + i * 2 * MB, 9) for i in range(5)]
          + [(0x1_0000_0000 + i * 4096, 0) for i in range(40)]
          + [(0x0800_0000 - 4096 * 3 + i * 4096, 0) for i in range(6)] + [(0x1234_5000, 0)])


def expected(blocks):
    """Independent expectation: every block's bytes, and blocks per order."""
    hist = {}
    for _, order in blocks:
        hist[order] = hist.get(order, 0) + 1
    return RangeSet(Range(p, 4096 << o) for p, o in blocks), hist


def kernel_n(blocks=BLOCKS, enabled=True):
    """Kernel N: its outgoing tree holds ``blocks`` (``enabled=False``: a NULL root)."""
    kernel = SynthKernel(ram_size=4 * GB)
    add_mm(kernel, MmSpec(NODES))
    encoder = place_radix_tree(kernel, blocks, TREE_BASE)
    layout = add_kho(kernel, radix_root=encoder.root, enabled=enabled)
    if not enabled:  # kho_init() returned before kho_radix_init_tree()
        kernel.write_variable("kho_out", bytes(8),
                              offsetof(layout.types["kho_out"], "radix_tree.root"))
    return kernel, encoder


def kernel_n1(blocks=BLOCKS, restored=(), flags=FLAGS_73, hugetlb=()):
    """Kernel N+1 after a KHO boot: reserved noinit regions and head pages with the magic."""
    kernel = SynthKernel(ram_size=4 * GB)
    layout = add_mm(kernel, MmSpec(NODES))
    add_kho(kernel, kho_boot=True)
    layout.preserve_heads(b for b in blocks if b not in restored)
    reserved = [Region(r.base, r.size, ("RSRV_NOINIT",)) for r in expected(blocks)[0]]
    reserved += [Region(p, s, ("RSRV_NOINIT", "RSRV_KERN", "RSRV_HUGETLB")) for p, s in hugetlb]
    state = make_state(memory_regions(NODES), sorted(reserved, key=lambda r: r.base), flags)
    return kernel.prog, state


def test_out_walks_back_to_the_encoded_set():
    kernel, encoder = kernel_n()
    report = read_outgoing(kernel.prog)
    ranges, hist = expected(BLOCKS)
    assert report.range_set() == ranges and dict(report.histogram) == hist
    assert set(report.tree_pages) == set(encoder.alloc.allocated)
    assert report.root == encoder.root and report.source == "out"
    assert [o for _, _, o in report.ranges] == sorted((o for _, _, o in report.ranges),
                                                      reverse=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.tuples(st.integers(0, 2 * GB // (2 * MB) - 1), st.sampled_from([0, 3, 9])),
               min_size=1, max_size=30))
def test_out_round_trips_random_sets(picks):
    # One block per distinct 2 MiB slot, so blocks of different orders never overlap.
    slots = {}
    for slot, order in picks:
        slots.setdefault(slot, order)
    blocks = [(slot * 2 * MB, order) for slot, order in slots.items()]
    kernel, _ = kernel_n(blocks)
    report = read_outgoing(kernel.prog, keys=True)
    ranges, hist = expected(blocks)
    assert report.range_set() == ranges and dict(report.histogram) == hist
    assert len(report.keys) == len(blocks)


@pytest.mark.parametrize("nested", [False, True])
def test_out_on_a_kho_v1_kernel_decodes_the_chunk_list(nested):
    kernel = SynthKernel(ram_size=4 * GB)
    add_mm(kernel, MmSpec(NODES))
    image = encode_khoser(BLOCKS, chunk_base=TREE_BASE, bitmap_base=TREE_BASE + 64 * 4096)
    for phys, page in image.pages.items():
        kernel.write_phys(phys, page)
    add_kho_v1(kernel, image.first, nested)
    report = read_outgoing(kernel.prog)
    ranges, hist = expected(BLOCKS)
    assert report.range_set() == ranges and dict(report.histogram) == hist
    assert report.tree_pages == tuple(image.chunks) and report.root == image.first


def test_out_on_a_kho_v1_kernel_before_finalize_says_so():
    kernel = SynthKernel()
    add_kho_v1(kernel, 0)
    with pytest.raises(NotKhoKernelError, match="finalize"):
        read_outgoing(kernel.prog)


def test_reserved_is_noinit_without_hugetlb():
    prog, state = kernel_n1(hugetlb=[(3 * GB, GB)])
    report = read_reserved(prog, state)
    assert report.range_set() == expected(BLOCKS)[0]
    assert {o for _, _, o in report.ranges} == {None} and report.notes == ()


def test_reserved_on_a_series_kernel_keeps_hugetlb_noinit_and_says_so():
    prog, state = kernel_n1(flags=FLAGS_V1)
    report = read_reserved(prog, state)
    assert report.range_set() == expected(BLOCKS)[0]
    assert "RSRV_HUGETLB" in report.notes[0]


def test_pages_find_heads_not_yet_restored():
    restored = [BLOCKS[0], BLOCKS[3]]
    prog, state = kernel_n1(restored=restored)
    report = read_pages(prog, state)
    left = [b for b in BLOCKS if b not in restored]
    ranges, hist = expected(left)
    assert report.range_set() == ranges and dict(report.histogram) == hist


# --- the command ------------------------------------------------------------


def preserved(prog, *args, state=None, monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.setattr(preserved_module, "read_memblock", lambda p, **kw: state)
    return run(["kho", "preserved", *args], Session(program_=prog))


def test_cli_out_json_shape(capsys):
    kernel, encoder = kernel_n()
    assert preserved(kernel.prog, "--json", "--raw") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "out"
    assert out["ranges"][0] == {"phys": GB, "size": GB, "order": 18}
    assert out["tree_pages"][0] == encoder.root
    assert out["totals"]["blocks"] == len(BLOCKS)
    assert out["totals"]["bytes"] == expected(BLOCKS)[0].total
    assert sorted(out["keys"]) == sorted(encoder.key(p, o) for p, o in BLOCKS)


def test_cli_text_pages_and_raw(capsys):
    kernel, encoder = kernel_n()
    assert preserved(kernel.prog, "--pages", "--raw") == 0
    out = capsys.readouterr().out
    assert "Preserved memory (source: out)" in out and "Per order" in out
    assert "Radix tree pages" in out and f"{encoder.root:#x}" in out
    assert "Radix keys" in out and "0x12345000" in out


def test_cli_snapshot_from_kernel_n_reads_back_in_kernel_n1(tmp_path, capsys):
    kernel, _ = kernel_n()
    assert preserved(kernel.prog, "--json") == 0
    snap = tmp_path / "n.json"
    snap.write_text(capsys.readouterr().out)
    assert preserved(SynthKernel().prog, "--from", "snapshot", str(snap), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "snapshot" and out["snapshot"]["source"] == "out"
    assert RangeSet(Range(r["phys"], r["size"]) for r in out["ranges"]) == expected(BLOCKS)[0]


def test_cli_reserved_and_pages_agree_with_the_snapshot(monkeypatch, capsys):
    prog, state = kernel_n1()
    for source in ("reserved", "pages"):
        assert preserved(prog, "--from", source, "--json", state=state,
                         monkeypatch=monkeypatch) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["source"] == source
        got = RangeSet(Range(r["phys"], r["size"]) for r in out["ranges"])
        assert got == expected(BLOCKS)[0]


def test_cli_refuses_the_incoming_tree_and_names_the_valid_sources(capsys):
    prog, _ = kernel_n1()
    assert preserved(prog, "--from", "in") == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert "cannot be walked after boot" in err
    for source in ("--from reserved", "--from pages", "--from snapshot FILE"):
        assert source in err


def test_cli_in_on_a_cold_boot_says_there_is_no_incoming_tree(capsys):
    kernel, _ = kernel_n()
    assert preserved(kernel.prog, "--from", "in") == EXIT_CANNOT_INSPECT
    assert "not booted through KHO" in capsys.readouterr().err


@pytest.mark.parametrize("value, problem", [
    (0x1234, "is not page aligned"),
    (8 * GB, "points outside RAM"),
    (TREE_BASE, "points to a page already visited at the root"),  # a loop
])
def test_cli_corrupt_tree_is_exit_2_with_the_path(capsys, value, problem):
    kernel, encoder = kernel_n()
    pages = encoder.pages()
    entry = next(i for i in range(512) if struct.unpack_from("<Q", pages[encoder.root], 8 * i)[0])
    poke_u64(pages, encoder.root + 8 * entry, value)
    kernel.write_phys(encoder.root, pages[encoder.root])
    assert preserved(kernel.prog) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert re.search(rf"root\[{entry}\]: .*{problem}", err), err
    assert err.count("\n") == 1


def test_cli_kho_disabled_is_exit_2(capsys):
    kernel, _ = kernel_n(enabled=False)
    assert preserved(kernel.prog) == EXIT_CANNOT_INSPECT
    # The activation says why (tests/test_diagnosis.py has each state).
    assert "Nothing is preserved: KHO is off (kho_enable is false)" in capsys.readouterr().err


def test_cli_file_goes_with_snapshot_only(capsys):
    prog = SynthKernel().prog
    assert preserved(prog, "--from", "snapshot") == EXIT_USAGE
    assert preserved(prog, "--from", "out", "file.json") == EXIT_USAGE
    assert "only used with --from snapshot" in capsys.readouterr().err

# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect hugetlb`` on synthetic kernels: every gigantic page with its
range, node, origin and state, the hugetlb CMA areas and the hstate counters,
compared with what the bench (tests/synth/hugetlb.py) wrote.

The machine: 8 GiB, node 0 ``[0, 4 GiB)`` and node 1 ``[4, 8 GiB)``; hstates
1 GiB (gigantic) and 2 MiB. Two kernels, as Linux 7.3 allows them:

* ``hugepagesz=1G hugepages=2`` (the lab's): boot-time pages at 1 and 5 GiB,
  runtime ones from the buddy allocator at 2 and 6 GiB;
* ``hugetlb_cma=2G``: hugetlb CMA areas of 1 GiB at 3 GiB (node 0) and 7 GiB
  (node 1) with a page each, and a buddy page at 2 GiB; no boot-time page
  (hugetlb_hstate_alloc_pages() skips them, mm/hugetlb.c:3636-3640).
"""

import json
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from synth.hugetlb import (
    GIB,
    CmaSpec,
    HugeFolio,
    HugetlbSpec,
    boot_log,
    hugetlb_kernel,
)
from synth.kernel import SynthKernel
from synth.mm import VMEMMAP

from kho_inspect.bootlog import parse_bootlog
from kho_inspect.cli import run
from kho_inspect.cli.session import Session
from kho_inspect.errors import EXIT_CANNOT_INSPECT, NotInKernelError
from kho_inspect.hugetlb import boot_allocations, read_hugetlb
from kho_inspect.model.hugetlb import HugetlbReport
from kho_inspect.model.memblock import FlagTable
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.views.hugetlb import sections

MIB = 1 << 20
NODES = [(0, 4 * GIB), (4 * GIB, 8 * GIB)]
CMA = [CmaSpec(0, ((3 * GIB, GIB),)), CmaSpec(1, ((7 * GIB, GIB),))]
SMALL = HugeFolio(6 * GIB + 512 * MIB, "free", "buddy", hstate=1)  # 2 MiB: not gigantic
FOLIOS = [
    HugeFolio(1 * GIB, "free", "boot"),
    HugeFolio(5 * GIB, "in use", "boot"),
    HugeFolio(6 * GIB, "free", "buddy"),
    HugeFolio(2 * GIB, "in use", "buddy", flags=("HPG_migratable",)),
    SMALL,
]
CMA_FOLIOS = [
    HugeFolio(2 * GIB, "in use", "buddy"),
    HugeFolio(7 * GIB, "in use", "cma"),
    HugeFolio(3 * GIB, "free", "cma"),
    SMALL,
]
KEYS = ("phys", "size", "node", "origin", "state")


def spec(**kwargs: object) -> HugetlbSpec:
    """The hugepages=2 kernel (keyword arguments change it)."""
    args: Dict[str, object] = {"nodes": NODES, "folios": FOLIOS}
    args.update(kwargs)
    return HugetlbSpec(**args)  # type: ignore[arg-type]


def cma_spec(**kwargs: object) -> HugetlbSpec:
    """The hugetlb_cma=2G kernel."""
    return spec(**{"folios": CMA_FOLIOS, "cma": CMA, **kwargs})


def pages(report: HugetlbReport) -> List[Dict[str, object]]:
    return [{k: getattr(p, k) for k in KEYS} for p in report.pages]


def origins(report: HugetlbReport) -> List[Tuple[int, str, Optional[str]]]:
    return [(p.phys // GIB, p.origin, p.origin_from) for p in report.pages]


def unknown_boot(expected: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    return [{**p, "origin": "unknown"} if p["origin"] in ("boot", "buddy") else p
            for p in expected]


# --- Linux 7.3 with memblock kept (the lab kernel) ---------------------------------


def test_every_gigantic_page_with_range_node_origin_state():
    prog, _, _, bench = hugetlb_kernel(spec())
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert report.boot_source == "memblock"
    assert origins(report) == [(1, "boot", "memblock"), (2, "buddy", "memblock"),
                               (5, "boot", "memblock"), (6, "buddy", "memblock")]
    assert [(p.phys // GIB, p.node, p.state) for p in report.pages] == [
        (1, 0, "free"), (2, 0, "in use"), (5, 1, "in use"), (6, 1, "free")]
    assert {p.hstate for p in report.pages} == {"hugepages-1048576kB"}
    assert report.cma_areas == ()


def test_hugetlb_cma_pages_and_areas():
    prog, _, _, bench = hugetlb_kernel(cma_spec())
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert origins(report) == [(2, "buddy", "memblock"), (3, "cma", "HPG_cma"),
                               (7, "cma", "HPG_cma")]
    assert [a.to_json() for a in report.cma_areas] == bench.expected_cma
    assert [(a.base // GIB, a.node, a.name) for a in report.cma_areas] == [
        (3, 0, "hugetlb0"), (7, 1, "hugetlb1")]


def test_folio_flags_by_name():
    flags = {p.phys // GIB: p.flags for p in read_hugetlb(hugetlb_kernel(spec())[0]).pages}
    assert flags[1] == ("freed",)  # enqueue_hugetlb_folio() sets HPG_freed
    assert flags[2] == ("migratable",)
    flags = {p.phys // GIB: p.flags for p in read_hugetlb(hugetlb_kernel(cma_spec())[0]).pages}
    assert flags[3] == ("freed", "cma") and flags[7] == ("cma",)


def test_a_cma_area_of_several_ranges():
    areas = [CmaSpec(1, ((4 * GIB, GIB), (7 * GIB, GIB)))]
    prog, _, _, bench = hugetlb_kernel(cma_spec(cma=areas,
                                                folios=[HugeFolio(7 * GIB, "free", "cma")]))
    report = read_hugetlb(prog)
    assert [(a.base // GIB, a.size // GIB, a.node, a.name) for a in report.cma_areas] == [
        (4, 1, 1, "hugetlb1"), (7, 1, 1, "hugetlb1")]
    assert [a.to_json() for a in report.cma_areas] == bench.expected_cma


def test_hstate_counters_for_sysfs():
    report = read_hugetlb(hugetlb_kernel(spec())[0])
    giant, small = report.hstates
    assert (giant.name, giant.size, giant.order, giant.gigantic) == (
        "hugepages-1048576kB", GIB, 18, True)
    assert (giant.nr_huge_pages, giant.free_huge_pages, giant.surplus_huge_pages,
            giant.resv_huge_pages) == (4, 2, 0, 0)
    assert [(n.node, n.nr_huge_pages, n.free_huge_pages) for n in giant.nodes] == [
        (0, 2, 1), (1, 2, 1)]
    assert (small.name, small.gigantic, small.nr_huge_pages) == ("hugepages-2048kB", False, 1)
    assert not any(n.startswith("hugepages-1048576kB:") for n in report.notes)


def test_a_boot_reservation_without_a_folio_is_noted():
    s = spec(folios=[*FOLIOS, HugeFolio(4 * GIB, "gone", "boot")])
    prog, _, _, bench = hugetlb_kernel(s)
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert any("RSRV_HUGETLB holds no gigantic hugetlb folio at [0x100000000-0x13fffffff]" in n
               for n in report.notes)
    nothing_left = spec(folios=[HugeFolio(4 * GIB, "gone", "boot")])
    report = read_hugetlb(hugetlb_kernel(nothing_left)[0])
    assert report.pages == () and report.boot_source is None
    assert [n[:40] for n in report.notes] == ["memblock.reserved RSRV_HUGETLB holds no "]


def test_pages_missing_from_the_lists_are_noted():
    report = read_hugetlb(hugetlb_kernel(spec(extra_pages={0: 2}))[0])
    assert any("4 folios on its lists (2 free), but nr_huge_pages is 6" in n
               for n in report.notes)


def test_lists_are_read_one_word_per_link():
    # Two u64 reads per folio (its lru.next and its private), no drgn object per folio.
    prog, _, mm, _ = hugetlb_kernel(spec())
    reads: List[Tuple[int, int]] = []

    def counting(address: int, count: int, offset: int, physical: bool) -> bytes:
        reads.append((offset, count))
        return mm.vmemmap.read(address, count, offset, physical)

    prog.add_memory_segment(VMEMMAP, 1 << 40, counting, False)  # the newest segment wins
    report = read_hugetlb(prog)
    assert len(reads) == 2 * len(report.pages) == 8
    assert {count for _, count in reads} == {8}


# --- memblock discarded (Debian x86_64) ----------------------------------------------


def test_discarded_memblock_without_a_debug_log_leaves_boot_and_buddy_unknown():
    prog, _, _, bench = hugetlb_kernel(spec(), generation="discarded")
    report = read_hugetlb(prog)
    assert pages(report) == unknown_boot(bench.expected_pages)
    assert report.boot_source is None
    assert {p.origin_from for p in report.pages} == {None}
    note = next(n for n in report.notes if "origin unknown" in n)
    assert "4 gigantic pages" in note and "memblock was not kept after boot" in note
    assert "no hugetlb_cma= area" in note and "the kernel log cannot be read" in note
    assert "memblock=debug" in note and "mm/hugetlb.c:3296-3348" in note


def test_discarded_memblock_with_a_debug_log_tells_boot_pages():
    s = spec()
    prog, _, _, bench = hugetlb_kernel(s, generation="discarded", log=boot_log(s))
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert report.boot_source == "boot log"
    assert origins(report)[:2] == [(1, "boot", "boot log"), (2, "buddy", "boot log")]


def test_a_log_that_lost_its_start_does_not_decide():
    s = spec()
    log = boot_log(s)[1:]  # no "Linux version" line: the buffer wrapped
    report = read_hugetlb(hugetlb_kernel(s, generation="discarded", log=log)[0])
    assert report.boot_source is None
    assert any("log_buf_len" in n for n in report.notes)


def test_discarded_memblock_with_hugetlb_cma_has_no_boot_pages():
    # hugetlb_cma= makes the kernel skip boot-time gigantic pages outside CMA.
    prog, _, _, bench = hugetlb_kernel(cma_spec(), generation="discarded")
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert report.boot_source == "hugetlb_cma"
    assert origins(report)[0] == (2, "buddy", "hugetlb_cma")
    assert any("mm/hugetlb.c:3636-3640" in n for n in report.notes)


def test_only_cma_pages_need_no_memblock_nor_log():
    s = cma_spec(folios=[HugeFolio(3 * GIB, "free", "cma"), HugeFolio(7 * GIB, "in use", "cma")])
    prog, _, _, bench = hugetlb_kernel(s, generation="discarded")
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert report.boot_source is None and report.notes == ()


def test_series_v1_memblock_has_no_hugetlb_flag_so_the_log_decides():
    s = spec()
    report = read_hugetlb(hugetlb_kernel(s, generation="series-v1", log=boot_log(s))[0])
    assert report.boot_source == "boot log"
    assert [p.origin for p in report.pages] == ["boot", "buddy", "boot", "buddy"]
    report = read_hugetlb(hugetlb_kernel(s, generation="series-v1", log=boot_log(s)[:2])[0])
    note = next(n for n in report.notes if "origin unknown" in n)
    assert "has no RSRV_HUGETLB" in note and "no memblock=debug lines" in note


# --- other kernels -------------------------------------------------------------------


def test_before_hpg_cma_and_multi_range_cma_a_cma_page_is_told_by_address():
    prog, _, _, bench = hugetlb_kernel(cma_spec(hpg_cma=False, multi_range_cma=False))
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert [(a.base // GIB, a.node, a.name) for a in report.cma_areas] == [
        (3, 0, "hugetlb0"), (7, 1, "hugetlb1")]
    assert {p.origin_from for p in report.pages if p.origin == "cma"} == {"hugetlb_cma area"}


def test_without_numa_no_page_has_a_node():
    s = HugetlbSpec(None, folios=[HugeFolio(GIB, "free", "boot"),
                                  HugeFolio(2 * GIB, "in use", "buddy")])
    prog, _, _, bench = hugetlb_kernel(s, generation="no-numa", ram_nodes=[(0, 4 * GIB)])
    report = read_hugetlb(prog)
    assert pages(report) == bench.expected_pages
    assert {p.node for p in report.pages} == {None}
    assert report.hstates[0].nodes == ()
    s = HugetlbSpec(None, folios=[HugeFolio(3 * GIB, "free", "cma")],
                    cma=[CmaSpec(0, ((3 * GIB, GIB),))])
    report = read_hugetlb(hugetlb_kernel(s, generation="no-numa", ram_nodes=[(0, 4 * GIB)])[0])
    assert [(p.node, p.origin) for p in report.pages] == [(None, "cma")]
    assert [a.node for a in report.cma_areas] == [None]


def test_a_cma_folio_outside_every_area_is_noted():
    s = cma_spec(folios=[HugeFolio(2 * GIB, "free", "cma")])
    report = read_hugetlb(hugetlb_kernel(s)[0])
    assert any("HPG_cma folio" in n and "outside every hugetlb_cma area" in n
               for n in report.notes)


def test_a_kernel_without_hugetlb():
    kernel = SynthKernel()
    with pytest.raises(NotInKernelError, match="no hugetlb"):
        read_hugetlb(kernel.prog)


# --- pure parts ---------------------------------------------------------------------


def test_boot_allocations_from_a_memblock_debug_log():
    log = parse_bootlog("\n".join(boot_log(spec())),
                        FlagTable({"RSRV_KERN": 0x20, "RSRV_HUGETLB": 0x80}))
    assert boot_allocations(log) == RangeSet([Range(GIB, GIB), Range(5 * GIB, GIB)])


def test_report_json_round_trip():
    report = read_hugetlb(hugetlb_kernel(spec(), generation="discarded")[0])
    assert HugetlbReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_view_sections():
    report = read_hugetlb(hugetlb_kernel(spec())[0])
    titles = [s.title for s in sections(report)]
    assert titles == ["Gigantic hugetlb pages", "hstates (/sys/kernel/mm/hugepages)",
                      "hstates per node (/sys/devices/system/node/node*/hugepages)", "Notes"]
    pages_section = sections(report)[0]
    assert pages_section.rows[0][:6] == ("0x40000000", "0x7fffffff", "1 GiB", "0", "boot",
                                         "free")
    assert pages_section.notes == ["Total: boot 2 GiB (1 free), buddy 2 GiB (1 free)."]
    cma = sections(read_hugetlb(hugetlb_kernel(cma_spec())[0]))[1]
    assert cma.title == "hugetlb CMA areas (hugetlb_cma[])"
    assert [row[5:] for row in cma.rows] == [(1, 1), (1, 0)]


# --- the command ------------------------------------------------------------------------


def _run(prog, *argv: str, capsys) -> Tuple[int, str, str]:
    code = run(["hugetlb", *argv], obj=Session(program_=prog))
    out, err = capsys.readouterr()
    return code, out, err


def test_command_json(capsys):
    prog, _, _, bench = hugetlb_kernel(cma_spec())
    code, out, _ = _run(prog, "--json", capsys=capsys)
    assert code == 0
    data = json.loads(out)
    assert [{k: p[k] for k in KEYS} for p in data["pages"]] == bench.expected_pages
    assert [{k: a[k] for k in ("base", "size", "node")} for a in data["cma_areas"]] == [
        {k: a[k] for k in ("base", "size", "node")} for a in bench.expected_cma]
    assert {h["name"] for h in data["hstates"]} == {"hugepages-1048576kB", "hugepages-2048kB"}


@pytest.mark.parametrize("fmt, marker", [("text", "Gigantic hugetlb pages\n====="),
                                         ("markdown", "### Gigantic hugetlb pages")])
def test_command_text_and_markdown(capsys, fmt, marker):
    code, out, _ = _run(hugetlb_kernel(cma_spec())[0], "--format", fmt, capsys=capsys)
    assert code == 0 and marker in out and "0x1c0000000" in out and "hugetlb1" in out


def test_command_without_hugetlb_is_one_sentence(capsys):
    code, out, err = _run(SynthKernel().prog, capsys=capsys)
    assert code == EXIT_CANNOT_INSPECT and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and "no hugetlb" in err


def test_help_has_examples(capsys):
    assert run(["hugetlb", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and "kho-inspect hugetlb --json" in out and "unknown" in out

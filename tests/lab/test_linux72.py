# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Linux 7.2 on x86_64 (``--kernel 7.2``: Debian sid's linux-source-7.2,
``vm/lab-7.2.config``, no ``INTEL_TDX_HOST`` and so no ``ARCH_KEEP_MEMBLOCK``),
in the lab's handover scenario, one 2-hop run per session::

    kho-inspect lab run --out DIR --kernel 7.2 --hops 2 --memory 6G --cores \\
        --append "hugepagesz=1G hugepages=2 memblock=debug nokaslr" \\
        --stage-append n0=kho_scratch=64M,2048M,64M --stage-append n1=kho_lab_stage=n1

The scratch sizes are given because 7.2 cannot size them itself here: its
``scratch_size_update()`` scales every ``MEMBLOCK_RSRV_KERN`` reservation, the two
1 GiB boot pages included (7.3 subtracts ``RSRV_HUGETLB``). Measured on this guest
with the default sizing: the pages at [0x100000000-0x17fffffff] (``alloc_bootmem``,
flags=20), then ``memblock_phys_alloc_range: 4622123008 bytes ... kho_memory_init``,
"KHO: Failed to reserve global scratch buffer", KHO and LUO off. With a 2 GiB
global area (below 4 GiB: the pages hold 4-6 GiB; ``nokaslr`` keeps the kernel
image out of it, as in test_unpreserved.py) the run hands over.

A different KHO generation than 7.3, found by name in the debug info, never by
version: no ``MEMBLOCK_RSRV_HUGETLB``, no extended scratch, the radix tree fed by
``kho_radix_add_page()``, gigantic boot pages allocated while memblock is still
limited to scratch on a KHO boot. memblock is discarded after boot: ``memblock``
refuses and says why, ``check`` runs the rules that do not need it and skips the
others with the reason. Oracles: debugfs ``kho/`` (memblock/ does not exist on
this kernel), the ``memblock=debug`` kernel log, sysfs hugetlb counters, the
guest's pagemap of the memfd, the memfd's bytes.
"""

import json
from typing import Any, Dict, List

import pytest

from kho_inspect.ranges import Range, RangeSet

from .conftest import STAGES, LabRun, reused, run_lab_cli, session_out
from .test_check import CHECK, statuses
from .test_handover import _debugfs_scratch, _memfd_pages, _ranges, _test_kho_folios

pytestmark = pytest.mark.lab

NAME = "7.2"
GIB = 1 << 30
ARGS = ("--kernel", NAME, "--hops", "2", "--memory", "6G", "--cores",
        "--append", "hugepagesz=1G hugepages=2 memblock=debug nokaslr",
        "--stage-append", "n0=kho_scratch=64M,2048M,64M", "--stage-append", "n1=kho_lab_stage=n1")
# check's rules that read memblock's arrays: they skip on a kernel that discarded them
NEEDS_MEMBLOCK = ("preserved-reserved", "extended-no-preserved", "memblock-sane")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    out = session_out(tmp_path_factory, NAME)
    found = reused(out) or run_lab_cli(out, ARGS)
    assert found.summary, f"lab run wrote no summary.json (exit {found.returncode}):\n" \
                          f"{found.output[-3000:]}"
    return found


def _commands(run: LabRun, stage: str, where: str = "kho-inspect") -> Dict[str, int]:
    records = json.loads((run.stage(stage) / where / "commands.json").read_text())
    return {r["name"]: r["exit_code"] for r in records}


def _dmesg(run: LabRun, stage: str) -> str:
    return (run.stage(stage) / "dmesg.txt").read_text(errors="replace")


def _pages(run: LabRun, stage: str) -> List[Range]:
    return sorted((Range(p["phys"], p["size"]) for p in run.guest(stage, "hugetlb")["pages"]),
                  key=lambda r: r.base)


def test_every_stage_verified(run: LabRun) -> None:
    run.assert_verified(STAGES)
    assert run.summary["lab_kernel"]["version"] == "7.2"
    assert {st["release"] for st in run.summary["stages"].values()} == {"7.2.13"}


@pytest.mark.parametrize("stage", STAGES)
def test_memblock_refuses_and_explains(run: LabRun, stage: str) -> None:
    """No ARCH_KEEP_MEMBLOCK: debugfs memblock/ has reserve_mem_param only, and
    kho-inspect says why in one sentence, exit 2, in the guest and on the host alike."""
    assert sorted(p.name for p in (run.stage(stage) / "memblock").iterdir()) == \
        ["reserve_mem_param"]
    for where in ("kho-inspect", "host"):
        assert _commands(run, stage, where)["memblock"] == 2, (stage, where)
        err = (run.stage(stage) / where / "memblock.err").read_text()
        assert "ARCH_KEEP_MEMBLOCK" in err and "Traceback" not in err, err


# Commands that read memblock's arrays refuse (exit 2, naming memblock); check and the
# report exit 1 in the KHO boots: hugetlb-boot-outside-scratch fails (see below).
NEEDS_ARRAYS = ("memblock", "kho-preserved-from-reserved", "kho-preserved-from-pages")
FAILS_ON_72 = ("check-previous-dmesg", "report-o-previous-dmesg")


@pytest.mark.parametrize("stage", STAGES)
def test_commands_exit_as_expected(run: LabRun, stage: str) -> None:
    for where in ("kho-inspect", "host"):
        codes = _commands(run, stage, where)
        for name, code in codes.items():
            want = 2 if name in NEEDS_ARRAYS else 1 if name in FAILS_ON_72 else 0
            assert code == want, (stage, where, name, code)
            if want == 2:
                err = (run.stage(stage) / where / f"{name}.err").read_text()
                assert err.count("\n") == 1 and "memblock" in err, err


@pytest.mark.parametrize("stage", STAGES)
def test_scratch_equals_debugfs(run: LabRun, stage: str) -> None:
    report = run.guest(stage, "kho-scratch")
    areas = [(a["addr"], a["size"]) for a in report["areas"]]
    assert areas == _debugfs_scratch(run, stage) == _debugfs_scratch(run, "n0")
    assert run.host(stage, "kho-scratch")["areas"] == report["areas"]
    # no extended scratch on 7.2 (no MEMBLOCK_KHO_SCRATCH_EXT, no kho_extend_scratch())
    assert not report["classes"].get("extended")


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_preserved_holds_memfd_and_test_kho(run: LabRun, stage: str) -> None:
    preserved = _ranges(run.guest(stage, "kho-preserved")["ranges"])
    assert preserved.covers(_memfd_pages(run, stage))
    if stage == "n0":
        assert preserved.covers(RangeSet(_test_kho_folios(run, stage)))
    assert run.host(stage, "kho-preserved")["ranges"] == \
        run.guest(stage, "kho-preserved")["ranges"]


@pytest.mark.parametrize("stage", STAGES)
def test_hugetlb_equals_sysfs_and_log(run: LabRun, stage: str) -> None:
    """The gigantic folios are the boot log's 1 GiB allocations (alloc_bootmem on 7.2,
    no RSRV_HUGETLB) and as many as sysfs counts."""
    pages = _pages(run, stage)
    counters = run.stage_json(stage)["hugepages"]["hugepages-1048576kB"]
    assert counters["nr_hugepages"] == len(pages)
    logged = RangeSet(Range(a["phys"], a["size"])
                      for a in run.guest(stage, "bootlog-dmesg")["allocations"]
                      if a["size"] == GIB and a["caller"].startswith("alloc_bootmem"))
    assert logged == RangeSet(pages), (stage, logged, pages)
    assert all(p["origin"] == "boot" for p in run.guest(stage, "hugetlb")["pages"])


@pytest.mark.parametrize("stage", STAGES[1:])
def test_check_runs_what_it_can_and_says_why_not(run: LabRun, stage: str) -> None:
    report = run.guest(stage, CHECK)
    by_id = statuses(report)
    assert statuses(run.host(stage, CHECK)) == by_id
    # no RSRV_HUGETLB in this kernel's enum memblock_flags: told apart by name
    assert report["summary"]["generation"] == "7.2"
    for rule in NEEDS_MEMBLOCK:
        entry = next(r for r in report["rules"] if r["id"] == rule)
        assert entry["status"] == "skip" and "memblock" in entry["reason"], entry
    assert sum(1 for s in by_id.values() if s == "pass") >= 15, by_id
    # what fails is the 1 GiB page in scratch: the page itself, and the scratch
    # pageblocks under it that are no longer MIGRATE_CMA
    assert {i for i, st in by_id.items() if st == "fail"} == \
        {"hugetlb-boot-outside-scratch", "scratch-cma"}, by_id
    for rule in report["rules"]:
        assert rule["status"] != "skip" or rule["reason"], rule


def _scratch(run: LabRun, stage: str) -> RangeSet:
    return RangeSet(Range(a, s) for a, s in _debugfs_scratch(run, stage))


def test_boot_pages_relative_to_scratch(run: LabRun) -> None:
    """Cold boot: both pages lie outside scratch (kho_reserve_scratch() runs after
    hugetlb_bootmem_alloc()). KHO boots: 7.2 allocates them while memblock still
    allocates from scratch only (memblock_free_all() ends that mode, after
    mm_core_init_early()), so the one 1 GiB-aligned block of the 2 GiB global area
    becomes a page and the second page fails; check names the page in scratch."""
    assert len(_pages(run, "n0")) == 2
    assert not any(_scratch(run, "n0").overlaps(p) for p in _pages(run, "n0"))
    for stage in STAGES[1:]:
        pages, scratch = _pages(run, stage), _scratch(run, stage)
        assert len(pages) == 1 and all(scratch.covers(p) for p in pages), (stage, pages)
        assert "HugeTLB: allocating 2 of page size 1.00 GiB failed.  Only allocated 1 " \
               "hugepages." in _dmesg(run, stage)
        rule: Dict[str, Any] = next(r for r in run.guest(stage, CHECK)["rules"]
                                    if r["id"] == "hugetlb-boot-outside-scratch")
        found = {(e["range"]["base"], e["range"]["size"]) for e in rule["evidence"]
                 if e.get("range")}
        assert rule["status"] == ("fail" if pages else "pass"), rule
        assert {(p.base, p.size) for p in pages} <= found, (rule, pages)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
The patched lab kernels on real handovers: ``7.3+unpreserved`` (the patch series
in vm/patches/7.3+unpreserved: ``MEMBLOCK_KHO_UNPRESERVED``, boot-time gigantic
pages from unpreserved memory only) and ``7.3+unpreserved-broken`` (the same
kernel with ``kho_lab_hugetlb_in_scratch``: boot-time gigantic pages from KHO
scratch, the bug the series prevents).

One 2-hop run per kernel per session, with the lab's default commands: the
snapshot right before each ``kexec -e`` and ``check --previous`` in every KHO
boot among them::

    kho-inspect lab run --out DIR --kernel 7.3+unpreserved --hops 2 --memory 6G \\
        --append "hugepagesz=1G hugepages=2 memblock=debug"
    kho-inspect lab run --out DIR --kernel 7.3+unpreserved-broken --hops 2 --memory 6G \\
        --append "hugepagesz=1G hugepages=2 memblock=debug nokaslr" \\
        --stage-append n0=kho_scratch=64M,2048M,64M

The broken run needs scratch that holds a free 1 GiB-aligned block for the bug
to hand out; the default sizing gives areas of a few hundred MiB. Its cold boot
sizes a 2 GiB global area: with the 1 GiB pages of the cold boot at 4-6 GiB it
goes below 4 GiB, top-down under the lowmem area, [0x37c00000, 0xb7c00000),
which holds the block [1 GiB, 2 GiB). 1.5 GiB there holds no aligned block.
``nokaslr`` keeps the kernel images out of the way: with KASLR the cold boot's
image lands anywhere and may leave no 2 GiB free below 4 GiB (KHO then turns
itself off), and a KHO boot's image may land in the block.

Oracles are the kernel's own: debugfs ``memblock/memory`` and ``reserved``
(flag names from the kernel's table), the ``memblock=debug`` line of every
``memblock_alloc_hugetlb()`` reservation in dmesg, and debugfs
``kho/out/scratch_phys`` + ``scratch_len`` (the scratch areas).
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import pytest

from kho_inspect.lab.commands import BEFORE_KEXEC_COMMANDS, KHO_BOOT_COMMANDS, command_name
from kho_inspect.ranges import Range, RangeSet

from .conftest import LabRun, reused, run_lab_cli, session_out
from .debugfs import parse_regions

pytestmark = pytest.mark.lab

HOPS = 2
STAGES = tuple(f"n{i}" for i in range(HOPS + 1))
KHO_BOOTS = STAGES[1:]
GIB = 1 << 30
APPEND = "hugepagesz=1G hugepages=2 memblock=debug"
# lowmem, global, per node; sized on the cold boot only, inherited by every KHO boot
BROKEN_SCRATCH = "kho_scratch=64M,2048M,64M"
BUG_WORD = "kho_lab_hugetlb_in_scratch"
# The lab's own hooks: the snapshot right before kexec -e, check --previous in KHO boots.
CHECK = next((c for c in KHO_BOOT_COMMANDS if c.startswith("check ")), "")
_HUGETLB_RESERVE = re.compile(r"__memblock_reserve: \[0x([0-9a-f]+)-0x([0-9a-f]+)\] "
                              r"nid=-?\d+ flags=\w+ memblock_alloc_hugetlb\+")


@dataclass(frozen=True)
class RunSpec:
    """One session run: the lab kernel and the stages' own command-line words."""

    kernel: str
    append: str = APPEND
    stage_append: Dict[str, str] = field(default_factory=dict)

    def args(self) -> List[str]:
        words = ["--kernel", self.kernel, "--hops", str(HOPS), "--memory", "6G",
                 "--append", self.append]
        for stage, text in self.stage_append.items():
            words += ["--stage-append", f"{stage}={text}"]
        return words


UNPRESERVED = RunSpec("7.3+unpreserved")
BROKEN = RunSpec("7.3+unpreserved-broken", f"{APPEND} nokaslr", {"n0": BROKEN_SCRATCH})


def _run(tmp_path_factory: pytest.TempPathFactory, spec: RunSpec) -> LabRun:
    """``kho-inspect lab run --out DIR`` plus ``spec``'s arguments (see the module doc)."""
    assert CHECK and any(c.startswith("snapshot ") for c in BEFORE_KEXEC_COMMANDS), \
        "the lab's default hooks no longer run snapshot before kexec and check after it"
    out = session_out(tmp_path_factory, spec.kernel)
    run = reused(out) or run_lab_cli(out, spec.args())
    assert run.summary, f"lab run wrote no summary.json (exit {run.returncode}):\n" \
                        f"{run.output[-3000:]}"
    return run


@pytest.fixture(scope="session")
def unpreserved(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    return _run(tmp_path_factory, UNPRESERVED)


@pytest.fixture(scope="session")
def broken(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    return _run(tmp_path_factory, BROKEN)


@pytest.fixture(params=["unpreserved", "broken"])
def run(request: pytest.FixtureRequest) -> LabRun:
    return request.getfixturevalue(request.param)


# --- the kernel's own oracles ---------------------------------------------------------------

def _memory(run: LabRun, stage: str):
    return parse_regions((run.stage(stage) / "memblock" / "memory").read_text())


def _flagged(run: LabRun, stage: str, flag: str) -> RangeSet:
    """debugfs memblock/memory regions with ``flag`` (the kernel's own name)."""
    return RangeSet(Range(r.base, r.size) for r in _memory(run, stage) if flag in r.flags)


def _scratch_areas(run: LabRun, stage: str) -> List[Range]:
    """The scratch areas from debugfs kho/out/scratch_phys and scratch_len."""
    kho = run.stage(stage) / "kho" / "out"
    phys = (kho / "scratch_phys").read_text().split()
    lens = (kho / "scratch_len").read_text().split()
    assert phys and len(phys) == len(lens), (phys, lens)
    return [Range(int(p, 16), int(n, 16)) for p, n in zip(phys, lens)]


def _boot_pages(run: LabRun, stage: str) -> List[Range]:
    """Every boot-time gigantic page: the memblock=debug line of its reservation by
    memblock_alloc_hugetlb(), checked against debugfs memblock/reserved."""
    dmesg = (run.stage(stage) / "dmesg.txt").read_text(errors="replace")
    pages = [Range(int(m.group(1), 16), int(m.group(2), 16) + 1 - int(m.group(1), 16))
             for m in _HUGETLB_RESERVE.finditer(dmesg)]
    reserved = parse_regions((run.stage(stage) / "memblock" / "reserved").read_text())
    hugetlb = RangeSet(Range(r.base, r.size) for r in reserved if "RSRV_HUGETLB" in r.flags)
    assert len(pages) == 2, f"{stage}: {pages}"
    for page in pages:
        assert page.size == GIB and page.base % GIB == 0, page
        assert hugetlb.covers(page), (stage, page, hugetlb)
    return sorted(pages, key=lambda r: r.base)


# --- kho-inspect's outputs ------------------------------------------------------------------

def _stage_commands(run: LabRun, stage: str) -> Dict[str, int]:
    path = run.stage(stage) / "kho-inspect" / "commands.json"
    return {r["name"]: r["exit_code"] for r in json.loads(path.read_text())}


CHECK_NAME = command_name(CHECK.format(previous_dir="/lab/out/n0")) if CHECK else "check"


def _check(run: LabRun, stage: str) -> Tuple[int, Dict[str, Any], str]:
    """The guest's ``check --previous`` in ``stage``: exit code, JSON report, text."""
    out = run.stage(stage) / "kho-inspect"
    code = _stage_commands(run, stage)[CHECK_NAME]
    err = (out / f"{CHECK_NAME}.err").read_text()
    assert (out / f"{CHECK_NAME}.json").stat().st_size, f"{stage}: check printed nothing: {err}"
    return code, json.loads((out / f"{CHECK_NAME}.json").read_text()), \
        (out / f"{CHECK_NAME}.txt").read_text()


def _rule(report: Dict[str, Any], rule_id: str) -> Dict[str, Any]:
    return next(r for r in report["rules"] if r["id"] == rule_id)


# --- both kernels ---------------------------------------------------------------------------

def test_every_stage_verified(run: LabRun) -> None:
    run.assert_verified(STAGES)
    assert run.summary["kernel"]["release"] == "7.3.4-unpreserved"
    assert {st["release"] for st in run.summary["stages"].values()} == {"7.3.4-unpreserved"}


def test_bug_parameter_on_every_command_line_of_the_broken_kernel(run: LabRun) -> None:
    broken = run.summary["lab_kernel"]["name"] == BROKEN.kernel
    assert run.summary["lab_kernel"]["cmdline"] == ([BUG_WORD] if broken else [])
    for stage in STAGES:
        words = run.stage_json(stage)["cmdline"].split()
        assert (BUG_WORD in words) is broken, stage
        dmesg = (run.stage(stage) / "dmesg.txt").read_text(errors="replace")
        assert ("kho_lab_hugetlb_in_scratch: boot-time gigantic pages may come from KHO "
                "scratch" in dmesg) is broken, stage


def test_unpreserved_flag_only_on_kho_boots(run: LabRun) -> None:
    """The kernel's debugfs table names the new flag; a cold boot has none of it."""
    assert not _flagged(run, "n0", "KHO_UNPRESERVED")
    assert not _flagged(run, "n0", "KHO_SCRATCH")
    for stage in KHO_BOOTS:
        unpreserved = _flagged(run, stage, "KHO_UNPRESERVED")
        scratch = _flagged(run, stage, "KHO_SCRATCH")
        assert unpreserved, f"{stage}: no KHO_UNPRESERVED region in debugfs memblock/memory"
        assert not unpreserved.intersect(scratch), stage  # 0003 keeps the two apart
        areas = RangeSet(_scratch_areas(run, stage))
        assert scratch.covers(areas) and not unpreserved.intersect(areas), stage
        # whole 1 GiB blocks of memory (0003 takes the scratch areas out again)
        memory = RangeSet(Range(r.base, r.size) for r in _memory(run, stage))
        blocks = RangeSet(Range.from_bounds(r.base // GIB * GIB, -(-r.end // GIB) * GIB)
                          for r in unpreserved)
        rest = blocks.intersect(memory).subtract(unpreserved).subtract(areas)
        assert not rest, (stage, rest)


def test_scratch_areas_are_inherited(run: LabRun) -> None:
    first = _scratch_areas(run, "n0")
    assert all(_scratch_areas(run, stage) == first for stage in KHO_BOOTS)


def test_memblock_command_agrees_with_debugfs(run: LabRun) -> None:
    for stage in STAGES:
        report = run.guest(stage, "memblock")
        assert "KHO_UNPRESERVED" in report["flags"], stage  # the enum, from the debug info
        ours = [(r["base"], r["size"], tuple(r["flags"])) for r in report["memory"]]
        theirs = [(r.base, r.size, r.flags) for r in _memory(run, stage)]
        assert ours == theirs, stage


def test_scratch_command_classes(run: LabRun) -> None:
    for stage in STAGES:
        report = run.guest(stage, "kho-scratch")
        assert report["flags"] == {"scratch": "KHO_SCRATCH", "unpreserved": "KHO_UNPRESERVED"}
        classes = {name: RangeSet(Range(r["base"], r["size"]) for r in rs)
                   for name, rs in report["classes"].items()}
        assert classes["original"] == RangeSet(_scratch_areas(run, stage)), stage
        assert classes["unpreserved"] == _flagged(run, stage, "KHO_UNPRESERVED"), stage


# --- 7.3+unpreserved: gigantic pages from unpreserved memory --------------------------------

@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_boot_pages_in_unpreserved_memory(unpreserved: LabRun, stage: str) -> None:
    zone = _flagged(unpreserved, stage, "KHO_UNPRESERVED")
    scratch = RangeSet(_scratch_areas(unpreserved, stage)).union(
        _flagged(unpreserved, stage, "KHO_SCRATCH"))
    for page in _boot_pages(unpreserved, stage):
        assert zone.covers(page), f"{stage}: {page} is not in KHO_UNPRESERVED memory"
        assert not scratch.overlaps(page), f"{stage}: {page} overlaps KHO scratch"


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_check_passes_and_names_the_flag(unpreserved: LabRun, stage: str) -> None:
    code, report, text = _check(unpreserved, stage)
    assert code == 0 and report["summary"]["failed"] == [], report["summary"]
    assert report["summary"]["generation"] == "unpreserved-flag"
    for rule_id in ("hugetlb-boot-outside-scratch", "hugetlb-boot-in-extended"):
        rule = _rule(report, rule_id)
        assert rule["status"] == "pass", rule
        assert "KHO_UNPRESERVED" in rule["reason"] or "KHO_SCRATCH" in rule["reason"], rule
    assert "KHO_UNPRESERVED" in _rule(report, "hugetlb-boot-in-extended")["reason"]
    assert "KHO_UNPRESERVED" in text


# --- 7.3+unpreserved-broken: gigantic pages from KHO scratch --------------------------------

def _pages_in_scratch(run: LabRun, stage: str) -> List[Range]:
    areas = RangeSet(_scratch_areas(run, stage))
    return [p for p in _boot_pages(run, stage) if areas.overlaps(p)]


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_broken_boot_pages_in_scratch(broken: LabRun, stage: str) -> None:
    areas = RangeSet(_scratch_areas(broken, stage))
    flagged = _flagged(broken, stage, "KHO_SCRATCH")
    in_scratch = _pages_in_scratch(broken, stage)
    assert in_scratch, (f"{stage}: no boot-time gigantic page in scratch "
                        f"{_scratch_areas(broken, stage)}: {_boot_pages(broken, stage)}")
    for page in in_scratch:
        assert areas.covers(page) and flagged.covers(page), (stage, page)


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_broken_check_fails_naming_each_page(broken: LabRun, stage: str) -> None:
    code, report, text = _check(broken, stage)
    assert code == 1, report["summary"]
    rule = _rule(report, "hugetlb-boot-outside-scratch")
    assert rule["status"] == "fail", rule
    found = {(e["range"]["base"], e["range"]["size"]) for e in rule["evidence"] if e["range"]}
    pages = {(p.base, p.size) for p in _pages_in_scratch(broken, stage)}
    assert pages <= found, (pages, rule["evidence"])
    for evidence in rule["evidence"]:
        assert "KHO_SCRATCH" in evidence["flags"], evidence
        assert evidence["class"] == "original", evidence
    for base, size in pages:  # the text names each page by its range too
        assert str(Range(base, size)) in text, (Range(base, size), text[-3000:])
    assert "hugetlb-boot-outside-scratch" in report["summary"]["failed"]

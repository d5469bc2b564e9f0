# SPDX-License-Identifier: LGPL-2.1-or-later
"""
``snapshot``, ``check``, ``hugetlb`` and ``bootlog`` on the lab's handover run
(see conftest.py): the snapshot each kernel wrote right before ``kexec -e``,
the next kernel's ``check --previous``, in the guest and on the host from the
vmcore, and the gigantic pages and boot-time allocations against the kernel's
own debugfs files.
"""

import json
from typing import Any, Dict, List

import pytest

from kho_inspect.ranges import Range, RangeSet

from .conftest import STAGES, LabRun
from .debugfs import parse_regions
from .test_handover import _debugfs_scratch

pytestmark = pytest.mark.lab

CHECK = "check-previous-dmesg"
HUGETLB_FLAG = "RSRV_HUGETLB"  # parse_regions() maps debugfs's RSV_HUGETLB to the enum name


def statuses(report: Dict[str, Any]) -> Dict[str, str]:
    return {r["id"]: r["status"] for r in report["rules"]}


def _debugfs(lab: LabRun, stage: str, mtype: str) -> List[Any]:
    return parse_regions((lab.stage(stage) / "memblock" / mtype).read_text())


def _flagged(lab: LabRun, stage: str, mtype: str, flag: str) -> RangeSet:
    return RangeSet(Range(r.base, r.size) for r in _debugfs(lab, stage, mtype) if flag in r.flags)


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_snapshot_taken_before_each_kexec(lab: LabRun, stage: str) -> None:
    doc = json.loads((lab.stage(stage) / "snapshot.json").read_text())
    assert doc["schema"] == "kho-inspect/snapshot" and doc["version"] >= 1
    assert lab.stage_json(stage)["before_kexec_commands"], stage
    # Taken after the stage's other commands: it holds at least what they saw preserved.
    body = doc["snapshot"]
    snap = RangeSet(Range(r["phys"], r["size"]) for r in body["preserved_out"]["ranges"])
    batch = RangeSet(Range(r["phys"], r["size"])
                     for r in lab.guest(stage, "kho-preserved")["ranges"])
    assert snap.covers(batch)


@pytest.mark.parametrize("stage", STAGES[1:])
def test_check_passes_every_rule_that_runs(lab: LabRun, stage: str) -> None:
    report = lab.guest(stage, CHECK)
    by_id = statuses(report)
    failed = {r["id"]: r["evidence"] for r in report["rules"] if r["status"] == "fail"}
    assert not failed, f"{stage}: {json.dumps(failed, indent=1)[:3000]}"
    ran = [i for i, s in by_id.items() if s == "pass"]
    assert len(ran) >= 20, by_id
    # The rules that need memblock, the tree and the hugetlb pages all ran on this kernel.
    for rule in ("extended-no-preserved", "preserved-reserved", "hugetlb-boot-in-extended",
                 "hugetlb-boot-outside-scratch", "boot-allocations-in-scratch",
                 "scratch-inherited", "chain-metadata"):
        assert by_id[rule] == "pass", (stage, rule)
    for rule in report["rules"]:
        assert rule["status"] != "skip" or rule["reason"], rule


@pytest.mark.parametrize("stage", STAGES)
def test_hugetlb_pages_equal_debugfs(lab: LabRun, stage: str) -> None:
    report = lab.guest(stage, "hugetlb")
    pages = RangeSet(Range(p["phys"], p["size"]) for p in report["pages"])
    # A boot page is two reservations in debugfs (head RSV_KERN|RSV_HUGETLB, tail with NIT).
    assert pages == _flagged(lab, stage, "reserved", HUGETLB_FLAG)
    assert all(p["origin"] == "boot" and p["size"] == 1 << 30 for p in report["pages"])
    sysfs = lab.stage_json(stage)["hugepages"]["hugepages-1048576kB"]["nr_hugepages"]
    assert len(report["pages"]) == sysfs == 2


@pytest.mark.parametrize("stage", STAGES[1:])
def test_bootlog_window_allocations_in_scratch(lab: LabRun, stage: str) -> None:
    boot = lab.guest(stage, "bootlog-dmesg")
    assert boot["window"] is not None, f"{stage}: no scratch-only window in its log"
    # x86 flags [0, 1 MiB) KHO_SCRATCH for the real-mode trampoline and clears it right
    # after (arch/x86/kernel/e820.c:1366, arch/x86/realmode/init.c:69); debugfs shows the
    # flag only when kho_extend_scratch() flagged the first 1 GiB block again.
    first_mib = RangeSet([Range(0, 1 << 20)])
    scratch_memory = _flagged(lab, stage, "memory", "KHO_SCRATCH") | first_mib
    # Allocations (memblock chose the address), not reservations of given ranges such as
    # firmware tables or the blocks KHO reserves for what the previous kernel preserved.
    inside = [a for a in boot["allocations"]
              if a["in_window"] and a["request"] != "__memblock_reserve"]
    assert len(inside) > 20, stage
    outside = [a for a in inside if not scratch_memory.covers(Range(a["phys"], a["size"]))]
    assert not outside, outside[:10]
    assert {a["class"] for a in inside} <= {"original", "extended", "first-mib"}
    # The trampoline is the allocation that needs the first MiB; it is in the window.
    assert [a for a in inside if a["caller"] == "reserve_real_mode"], stage


@pytest.mark.parametrize("stage", STAGES[1:])
def test_bootlog_gigantic_pages(lab: LabRun, stage: str) -> None:
    """The 1 GiB boot pages as the log shows them (flags=a0 pairs) are the hugetlb folios,
    and lie outside the original scratch areas (debugfs kho/out/scratch_*)."""
    boot = lab.guest(stage, "bootlog-dmesg")
    logged = RangeSet(Range(a["phys"], a["size"]) for a in boot["allocations"]
                      if "RSRV_HUGETLB" in a["flags"])
    folios = RangeSet(Range(p["phys"], p["size"]) for p in lab.guest(stage, "hugetlb")["pages"])
    assert logged == folios
    original = RangeSet(Range(a, s) for a, s in _debugfs_scratch(lab, stage))
    assert not logged.overlaps(original)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
The handover scenario on arm64: Linux 7.3 cross-built for arm64 (``arm64/7.3``,
``vm/lab-arm64.config``), ``qemu-system-aarch64 -M virt -cpu max`` under TCG, an
initramfs guest (busybox and ``vm/guest/khoguest.c``: test_kho, a reserve_mem
region and a LUO memfd preserved, kexec_file_load), kho-inspect run from this
x86_64 host against the guest at every stage's pause (QMP, plus the saved core)::

    kho-inspect lab run --out DIR --arch arm64 --kernel 7.3 --hops 2 --memory 6G --cores \\
        --append "hugepagesz=1G hugepages=2 memblock=debug" --stage-append n1=kho_lab_stage=n1

arm64 always keeps memblock (``ARCH_KEEP_MEMBLOCK``), so debugfs ``memblock/`` is
there to compare with; the scratch areas and the KHO FDT reach the next kernel as
``/chosen`` properties of the device tree (``linux,kho-fdt``, ``linux,kho-scratch``:
drivers/of/kexec.c writes them, drivers/of/fdt.c reads them), which the guest
copies to ``nK/chosen/``. Oracles: debugfs, the kernel log, /chosen, the guest's
pagemap of the memfd, the memfd's bytes.
"""

import json
import struct
from typing import Any, List

import pytest

from kho_inspect.ranges import Range, RangeSet

from .conftest import LAB_ARGS, STAGES, HostRun, LabRun, reused, run_lab_cli, session_out
from .test_check import CHECK, statuses
from .test_handover import (
    _assert_tree_holds_memfd,
    _debugfs_scratch,
    _regions,
    _test_kho_folios,
)

pytestmark = pytest.mark.lab

NAME = "arm64-7.3"
GIB = 1 << 30


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    out = session_out(tmp_path_factory, NAME)
    run = reused(out, HostRun) or run_lab_cli(out, ("--arch", "arm64", "--kernel", "7.3",
                                                    *LAB_ARGS), HostRun)
    assert run.summary, f"lab run wrote no summary.json (exit {run.returncode}):\n" \
                        f"{run.output[-3000:]}"
    return run


def test_every_stage_verified(arm: LabRun) -> None:
    arm.assert_verified(STAGES)
    assert arm.summary["kernel"]["arch"] == "arm64"
    assert arm.summary["qemu"][0] == "qemu-system-aarch64" and arm.summary["accel"] == "tcg"
    assert arm.summary["bzImage"].endswith("/Image")


def test_host_commands_succeeded(arm: LabRun) -> None:
    for stage in STAGES:
        host = arm.summary["stages"][stage]["host"]
        assert host and host["commands"], stage
        failed = {c: code for c, code in host["commands"].items() if code != 0}
        assert not failed, (stage, failed)


@pytest.mark.parametrize("stage", STAGES[1:])
def test_memfd_bytes_survive_kexec(arm: LabRun, stage: str) -> None:
    got = arm.stage_json(stage)["memfd_in"]
    sent = arm.stage_json(f"n{int(stage[1:]) - 1}")["memfd_out"]
    assert got["verified"] is True and got["bad_blocks"] == 0
    assert got["size"] == sent["size"] and got["session"] == sent["session"]


def _chosen(arm: LabRun, stage: str, prop: str) -> bytes:
    path = arm.stage(stage) / "chosen" / prop
    return path.read_bytes() if path.is_file() else b""


def test_handover_through_chosen(arm: LabRun) -> None:
    """A KHO boot finds the FDT and the scratch array in /chosen; the cold boot does not.
    The scratch property points at the array (struct kho_scratch {addr, size}) the
    kernel kept, and the areas in it are the ones kho-inspect reads."""
    assert not _chosen(arm, "n0", "linux,kho-fdt")
    for stage in STAGES[1:]:
        fdt = _chosen(arm, stage, "linux,kho-fdt")
        scratch = _chosen(arm, stage, "linux,kho-scratch")
        assert len(fdt) == 16 and len(scratch) == 16, stage  # <addr size>, 2 cells each
        assert (arm.stage(stage) / "kho" / "in").is_dir()
        addr, size = struct.unpack(">QQ", scratch)
        areas = arm.guest(stage, "kho-scratch")["areas"]
        assert size == 16 * len(areas), (stage, size, areas)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("mtype", ("memory", "reserved"))
def test_memblock_equals_debugfs(arm: LabRun, stage: str, mtype: str) -> None:
    from .debugfs import parse_regions

    oracle = [(r.base, r.size, r.nid, r.flags)
              for r in parse_regions((arm.stage(stage) / "memblock" / mtype).read_text())]
    report = arm.guest(stage, "memblock")
    assert oracle and _regions(report[mtype]) == oracle
    assert report["stale"] is False


@pytest.mark.parametrize("stage", STAGES)
def test_scratch_equals_debugfs(arm: LabRun, stage: str) -> None:
    areas = arm.guest(stage, "kho-scratch")["areas"]
    assert [(a["addr"], a["size"]) for a in areas] == _debugfs_scratch(arm, stage)
    assert _debugfs_scratch(arm, stage) == _debugfs_scratch(arm, "n0")  # inherited


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_preserved_holds_memfd_and_test_kho(arm: LabRun, stage: str) -> None:
    preserved = _assert_tree_holds_memfd(arm, stage)
    if stage == "n0":
        assert preserved.covers(RangeSet(_test_kho_folios(arm, stage)))


@pytest.mark.parametrize("stage", STAGES)
def test_hugetlb_equals_debugfs_and_log(arm: LabRun, stage: str) -> None:
    from .debugfs import parse_regions

    pages = RangeSet(Range(p["phys"], p["size"]) for p in arm.guest(stage, "hugetlb")["pages"])
    reserved = parse_regions((arm.stage(stage) / "memblock" / "reserved").read_text())
    assert pages == RangeSet(Range(r.base, r.size) for r in reserved
                             if "RSRV_HUGETLB" in r.flags)
    counters = arm.stage_json(stage)["hugepages"]["hugepages-1048576kB"]
    assert counters["nr_hugepages"] == len(arm.guest(stage, "hugetlb")["pages"]) == 2
    logged = RangeSet(Range(a["phys"], a["size"])
                      for a in arm.guest(stage, "bootlog-dmesg")["allocations"]
                      if "RSRV_HUGETLB" in a["flags"])
    assert logged == pages


@pytest.mark.parametrize("stage", STAGES[1:])
def test_check_passes(arm: LabRun, stage: str) -> None:
    report = arm.guest(stage, CHECK)
    failed = {r["id"]: r["evidence"] for r in report["rules"] if r["status"] == "fail"}
    assert not failed, json.dumps(failed, indent=1)[:3000]
    by_id = statuses(report)
    for rule in ("preserved-reserved", "hugetlb-boot-outside-scratch", "scratch-inherited",
                 "boot-allocations-in-scratch"):
        assert by_id[rule] == "pass", (stage, rule, by_id)


@pytest.mark.parametrize("stage", STAGES[1:])
def test_boot_pages_outside_scratch(arm: LabRun, stage: str) -> None:
    original = RangeSet(Range(a, s) for a, s in _debugfs_scratch(arm, stage))
    pages: List[Any] = arm.guest(stage, "hugetlb")["pages"]
    assert pages and not any(original.overlaps(Range(p["phys"], p["size"])) for p in pages)
    assert all(p["size"] == GIB and p["phys"] % GIB == 0 for p in pages)

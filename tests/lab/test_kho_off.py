# SPDX-License-Identifier: LGPL-2.1-or-later
"""
A KHO that disabled itself, for real (issue 8 item 4): an 8 GiB guest booted
with ``kho=on hugetlb_cma=2G``. A hugetlb CMA area is a memblock ``RSRV_KERN``
reservation, so ``scratch_size_update()`` counts it twice (default scale 200 %);
the global scratch area then cannot be reserved and the kernel logs
"KHO: Failed to reserve global scratch buffer" and turns KHO and LUO off.

One stage, no kexec::

    kho-inspect lab run --out DIR --hops 0 --memory 8G --append hugetlb_cma=2G \\
        --command "kho status --json" --command "kho scratch --json" \\
        --command "check --dmesg --json"

The stage itself fails (nothing can be preserved); the test reads what
kho-inspect said about it, against the kernel's own log.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from .conftest import LabRun

pytestmark = pytest.mark.lab

COMMANDS = ("kho status --json", "kho scratch --json", "check --dmesg --json")
ARGS = ("--hops", "0", "--memory", "8G", "--append", "hugetlb_cma=2G",
        *(w for c in COMMANDS for w in ("--command", c)))
GIB = 1 << 30


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    keep = os.environ.get("KHO_OFF_OUT")
    out = Path(keep) if keep else tmp_path_factory.mktemp("kho-off")
    if not (keep and os.environ.get("KHO_LAB_REUSE") and (out / "summary.json").is_file()):
        argv = [sys.executable, "-m", "kho_inspect", "lab", "run", "--out", str(out), *ARGS]
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stderr.write(proc.stdout[-3000:])
    run = LabRun(out, 1, "")
    assert (out / "n0" / "kho-inspect").is_dir(), "the KHO-off stage ran no command"
    return run


def _exit(run: LabRun, command: str) -> int:
    return run.stage_json("n0")["commands"][command]


def _log(run: LabRun) -> str:
    return (run.stage("n0") / "dmesg.txt").read_text()


def test_the_kernel_disabled_kho(off: LabRun) -> None:
    log = _log(off)
    assert "KHO: Failed to reserve global scratch buffer" in log
    assert "KHO: Failed to reserve scratch area, disabling kexec handover" in log
    assert "hugetlb_cma: reserved 2048 MiB on node 0" in log


def test_status_says_disabled_and_why(off: LabRun) -> None:
    status: Dict[str, Any] = off.guest("n0", "kho-status")
    act = status["activation"]
    assert status["enabled"] is False and act["state"] == "disabled"
    assert "kho=on" in act["requested_by"]
    assert "global scratch area" in act["reason"]
    assert "KHO: Failed to reserve global scratch buffer" in act["log"]
    needs = {n["area"]: n for n in act["sizing"]["needs"]}
    assert needs["global"]["reserved"] is False and needs["lowmem"]["reserved"] is True
    # The 2 GiB hugetlb CMA area is named as what drove the sizing, counted twice.
    drivers = {d["name"]: d for d in act["sizing"]["drivers"]}
    cma = drivers["hugetlb_cma node 0"]
    assert (cma["size"], cma["counted"]) == (2 * GIB, True)
    assert needs["global"]["needed"] > needs["global"]["available"]


def test_no_stale_array_is_shown_as_scratch(off: LabRun) -> None:
    assert _exit(off, "kho scratch --json") == 2
    err = (off.stage("n0") / "kho-inspect" / "kho-scratch.err").read_text()
    assert err.count("\n") == 1 and "KHO disabled itself" in err and "Traceback" not in err


def test_check_fails_kho_active_with_the_evidence(off: LabRun) -> None:
    assert _exit(off, "check --dmesg --json") == 1
    report = off.guest("n0", "check-dmesg")
    status = {r["id"]: r for r in report["rules"]}
    # KHO off, and why: the hugetlb CMA area counted as kernel memory by the sizing.
    assert sorted(report["summary"]["failed"]) == ["kho-active", "scratch-sizing-hugetlb"]
    lines = [line for e in status["kho-active"]["evidence"] for line in e["lines"]]
    assert "KHO: Failed to reserve global scratch buffer" in lines
    sizing = status["scratch-sizing-hugetlb"]["evidence"]
    assert any(e["range"] and e["range"]["size"] == 2 * GIB for e in sizing), sizing

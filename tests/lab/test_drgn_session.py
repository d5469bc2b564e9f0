# SPDX-License-Identifier: LGPL-2.1-or-later
"""
kho-inspect's drgn plugin in real drgn sessions on the lab's handover run
(conftest.py, ``--drgn-session``): in n1 the guest started the ``drgn`` CLI on
its running kernel under a pseudo-terminal, with the plugin loaded through
``DRGN_PLUGINS``, and typed ``%memblock``, ``%kho``, ``%kho_check`` and a
helper import at drgn's prompt (vm/guest/scenario.py ``drgn_session``). Each
output is judged against an oracle the tool does not share: debugfs
``memblock/`` and ``kho/out/scratch_*`` copied in the same kernel, and the
verdict of the batch's ``check`` in that kernel.

``scripts/kho_check.py`` runs as a drgn script (``drgn -c vmcore -s vmlinux
SCRIPT``) on the host, on the vmcore saved at n1's pause: a second vmlinux load
in the TCG guest would cost another 30-50 s.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from .conftest import LabRun
from .debugfs import parse_regions
from .test_check import CHECK, statuses
from .test_handover import _debugfs_scratch, _regions

pytestmark = pytest.mark.lab

STAGE = "n1"
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _session(lab: LabRun) -> Dict[str, Any]:
    return json.loads((lab.stage(STAGE) / "drgn-session.json").read_text())


def _output(lab: LabRun, prefix: str) -> str:
    """The output of the session's input line that starts with ``prefix``."""
    return next(c["output"] for c in _session(lab)["commands"] if c["input"].startswith(prefix))


def _debugfs(lab: LabRun, mtype: str) -> List[Any]:
    return parse_regions((lab.stage(STAGE) / "memblock" / mtype).read_text())


def test_session_ran_every_command(lab: LabRun) -> None:
    result = lab.stage_json(STAGE)["drgn_session"]
    assert result["exit_code"] == 0 and result["completed"], result
    assert result["plugins"] == "kho_inspect=kho_inspect.drgn_plugin"
    transcript = (lab.stage(STAGE) / "drgn-session.txt").read_text()
    assert transcript.startswith("# drgn -s ") and "For help, type help(drgn)." in transcript
    for command in ("%memblock", "%kho scratch", "%kho_check"):
        assert f">>> {command}" in transcript, command
    assert "Traceback" not in transcript and "unknown command" not in transcript.lower()
    assert not any("n1: run a drgn session" in e for e in lab.stage_json(STAGE)["errors"])


@pytest.mark.parametrize("mtype", ("memory", "reserved"))
def test_memblock_command_equals_debugfs(lab: LabRun, mtype: str) -> None:
    doc = json.loads(_output(lab, "%memblock --json"))
    oracle = [(r.base, r.size, r.nid, r.flags) for r in _debugfs(lab, mtype)]
    assert oracle and _regions(doc[mtype]) == oracle


def test_memblock_command_pipes_through_drgns_shell(lab: LabRun) -> None:
    """``%memblock ... | grep -c`` counts the gigantic-page reservations debugfs lists."""
    pages = [r for r in _debugfs(lab, "reserved") if "RSRV_HUGETLB" in r.flags]
    assert pages and int(_output(lab, "%memblock --type reserved").strip()) == len(pages)


def test_kho_command_scratch_equals_debugfs(lab: LabRun) -> None:
    areas = json.loads(_output(lab, "%kho scratch --json"))["areas"]
    assert [(a["addr"], a["size"]) for a in areas] == _debugfs_scratch(lab, STAGE)
    text = next(c["output"] for c in _session(lab)["commands"] if c["input"] == "%kho scratch")
    assert "Scratch areas" in text and "lowmem" in text


def test_kho_check_command_judges_as_the_batch(lab: LabRun) -> None:
    drgn = json.loads(_output(lab, "%kho_check"))
    batch = lab.guest(STAGE, CHECK)
    assert statuses(drgn) == statuses(batch)
    assert drgn["summary"]["fail"] == 0 and drgn["summary"]["pass"] >= 20


def test_helpers_import_at_the_prompt(lab: LabRun) -> None:
    """``from kho_inspect.memblock import read_memblock`` at drgn's prompt, on its ``prog``."""
    words = _output(lab, "print('helper:'").split()
    assert words[0] == "helper:"
    assert [int(w) for w in words[1:3]] == [len(_debugfs(lab, "memory")),
                                            len(_debugfs(lab, "reserved"))]


def test_script_on_the_vmcore_judges_as_the_guest(lab: LabRun, tmp_path: Path) -> None:
    """``drgn -c vmcore -s vmlinux scripts/kho_check.py`` (the kdump files QEMU writes
    do not name their architecture: drgn needs ``--architecture``)."""
    vmcore = lab.stage(STAGE) / "vmcore"
    argv = [sys.executable, "-m", "drgn", "-c", str(vmcore), "--architecture", "x86_64",
            "-s", lab.vmlinux, "--main-symbols", "--quiet", str(SCRIPTS / "kho_check.py"),
            "--previous", str(lab.stage("n0") / "snapshot.json"), "--dmesg", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert statuses(json.loads(done.stdout)) == statuses(lab.guest(STAGE, CHECK))

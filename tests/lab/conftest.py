# SPDX-License-Identifier: LGPL-2.1-or-later
"""
The kernel lab suite: ONE handover run per test session, many assertions on it.

The session fixture runs the command the issue names, on the lab kernel built
from Debian's linux-source-7.3 (``make lab-deps`` builds it; the run builds
anything still missing)::

    kho-inspect lab run --out DIR --hops 2 --memory 6G --cores \\
        --append "hugepagesz=1G hugepages=2 memblock=debug kho_lab_trace" \\
        --stage-append n1=kho_lab_stage=n1 --drgn-session

(the ``--stage-append`` word is a marker the kernel passes on to init, unused: it
shows that a stage's own words reach that stage and not the next one; ``--drgn-session``
drives drgn's CLI with kho-inspect's plugin in n1, see test_drgn_session.py;
``kho_lab_trace`` makes the guest run kho-inspect trace, see test_trace.py).

Every test reads that run's artifacts. Nothing here skips: where QEMU can start
(TCG always can) a failure to run the lab is a failure of the suite.

``KHO_LAB_OUT=DIR`` keeps the artifacts in ``DIR`` (default: a pytest temp
directory); ``KHO_LAB_REUSE=1`` with it reuses a finished run instead of
starting a new one (for iterating on the assertions only). Other modules' session
runs (one per lab kernel, e.g. test_unpreserved.py) keep theirs in ``DIR-<name>``
(:func:`session_out`, :func:`reused`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

HOPS = 2
STAGE_APPEND = ("n1", "kho_lab_stage=n1")
LAB_ARGS = ("--hops", str(HOPS), "--memory", "6G", "--cores",
            "--append", "hugepagesz=1G hugepages=2 memblock=debug kho_lab_trace",
            "--stage-append", "=".join(STAGE_APPEND), "--drgn-session")
STAGES = tuple(f"n{i}" for i in range(HOPS + 1))


class LabRun:
    """A finished ``lab run``: its directory, exit code, console output and summary."""

    def __init__(self, out: Path, returncode: int, output: str) -> None:
        self.out = out
        self.returncode = returncode
        self.output = output
        path = out / "summary.json"
        self.summary: Dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def stage(self, name: str) -> Path:
        return self.out / name

    def stage_json(self, name: str) -> Dict[str, Any]:
        return json.loads((self.out / name / "stage.json").read_text())

    def guest(self, stage: str, command: str) -> Any:
        """The in-guest ``--json`` output of ``command`` (file stem) in ``stage``."""
        return json.loads((self.out / stage / "kho-inspect" / f"{command}.json").read_text())

    def host(self, stage: str, command: str) -> Any:
        """The host-side ``--qemu`` output of ``command`` in ``stage`` (taken at the pause)."""
        return json.loads((self.out / stage / "host" / f"{command}.json").read_text())

    @property
    def vmlinux(self) -> str:
        return self.summary["vmlinux"]

    def assert_verified(self, stages: Sequence[str]) -> None:
        """The run exited 0 and verified each of ``stages``, and no other; the
        message names each unverified stage's problems and the console's end."""
        problems = {name: st["problems"] for name, st in self.summary["stages"].items()
                    if not st["verified"]}
        assert self.summary["ok"] and self.returncode == 0, (
            problems, self.summary["problems"], self.output[-3000:])
        assert list(self.summary["stages"]) == list(stages)


class HostRun(LabRun):
    """A run whose guest has no kho-inspect (the arm64 initramfs): every command ran on
    the host at the stage's pause, so :meth:`guest` reads the host's results and the
    helpers written for in-guest results apply unchanged."""

    def guest(self, stage: str, command: str) -> Any:
        return self.host(stage, command)


def run_lab_cli(out: Path, args: Sequence[str] = LAB_ARGS, kind: type = LabRun) -> LabRun:
    """``kho-inspect lab run --out OUT ARGS`` in a child process."""
    argv = [sys.executable, "-m", "kho_inspect", "lab", "run", "--out", str(out), *args]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stderr.write(proc.stdout[-6000:])
    return kind(out, proc.returncode, proc.stdout)


def session_out(tmp_path_factory: pytest.TempPathFactory, name: str = "") -> Path:
    """The directory of a session run: ``$KHO_LAB_OUT`` (``$KHO_LAB_OUT-<name>`` for a
    named run) when set, else a pytest temp directory."""
    keep = os.environ.get("KHO_LAB_OUT")
    if keep:
        return Path(f"{keep}-{name}" if name else keep)
    return tmp_path_factory.mktemp(name or "lab")


def reused(out: Path, kind: type = LabRun) -> Optional[LabRun]:
    """The finished run in ``out`` when ``KHO_LAB_OUT`` and ``KHO_LAB_REUSE`` ask for it."""
    if os.environ.get("KHO_LAB_OUT") and os.environ.get("KHO_LAB_REUSE") \
            and (out / "summary.json").is_file():
        return kind(out, 0 if json.loads((out / "summary.json").read_text())["ok"] else 1,
                    "(reused)")
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Keep each lab run on one pytest-xdist worker (``make test`` runs ``-n 2 --dist
    loadgroup``): every test of the main run (the ``lab`` fixture, directly or through
    another fixture) in group ``lab-main``, every other lab module in a group of its own,
    since a module's runs are module or session fixtures. A TCG guest keeps about one host
    core busy, so two workers run two lab kernels side by side on the 2-core machine."""
    here = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        if path.parent != here:
            continue
        group = "lab-main" if "lab" in item.fixturenames else f"lab-{path.stem}"
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run on a pytest-xdist worker whose lab tests are not grouped (no
    ``--dist loadgroup``, or a pytest that ignores the groups): a lab run would then start
    on every worker that got one of its tests. pytest-xdist 3.8 marks a grouped test by
    appending ``@group`` to its node id, which pytest 9.2 no longer reads
    (pytest-xdist issue #1386)."""
    if not hasattr(session.config, "workerinput"):
        return  # not a pytest-xdist worker: one session runs every lab run once
    here = Path(__file__).parent
    lost = [item.nodeid for item in session.items
            if Path(str(item.fspath)).parent == here and item.get_closest_marker("lab")
            and "@" not in item.nodeid]
    if lost:
        message = (f"pytest-xdist did not group {len(lost)} lab tests ({lost[0]}, ...): each "
                   "lab run would start once per worker; run with --dist loadgroup (as make test "
                   "does) under pytest < 9.2 (setup.cfg), or without -n.")
        sys.stderr.write(message + "\n")  # a worker's exception reaches the controller bare
        raise pytest.UsageError(message)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    out = session_out(tmp_path_factory)
    previous = reused(out)
    if previous is not None:
        return previous
    run = run_lab_cli(out)
    assert run.summary, f"lab run wrote no summary.json (exit {run.returncode}):\n" \
                        f"{run.output[-3000:]}"
    return run


# SPDX-License-Identifier: LGPL-2.1-or-later
"""The operator pair for post-kexec verification: systemd units and kho-kexec.

The units are checked with the real ``systemd-analyze verify`` and their
kho-inspect command lines against the CLI's own option parser; the wrapper
runs with a stand-in ``kexec`` and ``kho-inspect`` on PATH that record what
they were asked to do.
"""

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from kho_inspect.cli import cli

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
UNITS = sorted((SCRIPTS / "systemd").glob("*.service"))
INSTALLED = "/usr/local/bin/kho-inspect"


def _exec_line(unit: Path, key: str) -> str:
    """The command line of ``key`` (``ExecStart``) with systemd's ``$$`` unescaped."""
    line = next(x for x in unit.read_text().splitlines() if x.startswith(f"{key}="))
    return line.split("=", 1)[1].replace("$$", "$")


def _kho_inspect_lines(unit: Path) -> List[List[str]]:
    """The kho-inspect command lines of ``unit``'s ExecStart and ExecStop, also inside a
    ``/bin/sh -c`` script (each ``;``/``&&`` part, ``exec`` and redirections dropped)."""
    out = []
    for key in ("ExecStart", "ExecStop"):
        if f"\n{key}=" not in "\n" + unit.read_text():
            continue
        words = shlex.split(_exec_line(unit, key))
        parts = [words]
        if words[:2] == ["/bin/sh", "-c"]:
            parts = [shlex.split(p) for p in words[2].replace("&&", ";").split(";")]
        for part in parts:
            part = part[1:] if part[:1] == ["exec"] else part
            if part and part[0] == INSTALLED:
                out.append(part[1:part.index(">")] if ">" in part else part[1:])
    return out


def test_units_exist() -> None:
    assert {u.name for u in UNITS} == {"kho-inspect-snapshot.service",
                                      "kho-inspect-check.service"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    # verify insists that ExecStart binaries exist: point them at this kho-inspect.
    exe = shutil.which("kho-inspect") or str(Path(sys.executable).parent / "kho-inspect")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED, exe))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert unit.name not in done.stderr, done.stderr  # no warning about this unit


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nType=oneshot\nExecStart=/nonexistent/kho-inspect check\n")
    done = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 or "nonexistent" in done.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_command_lines_parse(unit: Path) -> None:
    lines = _kho_inspect_lines(unit)
    assert lines, f"{unit.name} runs no kho-inspect command"
    for argv in lines:
        # click parses the command line exactly as the installed tool would.
        # Parse without invoking: the group (no arguments of its own here; resilient,
        # or click would answer an empty command line with the help), then the
        # subcommand with its options, strictly.
        ctx = cli.make_context("kho-inspect", [], resilient_parsing=True)
        with ctx:
            name, sub, rest = cli.resolve_command(ctx, list(argv))
            assert sub is not None, f"{unit.name}: no command {name}"
            sub.make_context(name, rest, parent=ctx)


def _fake_bin(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_wrapper(tmp_path: Path, *args: str, snapshot_rc: int = 0, loaded: str = "1"):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    _fake_bin(bindir, "kho-inspect",
              f'echo "kho-inspect $*" >> {log}\n'
              f'[ {snapshot_rc} -eq 0 ] || exit {snapshot_rc}\n'
              'while [ $# -gt 0 ]; do [ "$1" = -o ] && echo "{}" > "$2"; shift; done\n')
    _fake_bin(bindir, "kexec", f'echo "kexec $*" >> {log}\n')
    flag = tmp_path / "kexec_loaded"
    flag.write_text(loaded + "\n")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", KHO_KEXEC_LOADED=str(flag))
    done = subprocess.run([str(SCRIPTS / "kho-kexec"), *args], capture_output=True, text=True,
                          env=env, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_wrapper_snapshots_then_kexecs(tmp_path: Path) -> None:
    out = tmp_path / "state" / "snap.json"
    done, calls = _run_wrapper(tmp_path, "-o", str(out), "--", "--vmlinux", "/v")
    assert done.returncode == 0, done.stderr
    assert calls == [f"kho-inspect --vmlinux /v snapshot -o {out}.tmp", "kexec -e"]
    assert out.read_text().strip() == "{}"


def test_wrapper_refuses_without_a_loaded_kernel(tmp_path: Path) -> None:
    done, calls = _run_wrapper(tmp_path, "-o", str(tmp_path / "s.json"), loaded="0")
    assert done.returncode == 2 and calls == []
    assert "kexec -s -l" in done.stderr


def test_wrapper_does_not_kexec_when_the_snapshot_fails(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    done, calls = _run_wrapper(tmp_path, "-o", str(out), snapshot_rc=2)
    assert done.returncode == 2 and calls[-1].startswith("kho-inspect") and not out.exists()
    forced, calls = _run_wrapper(tmp_path, "-o", str(out), "--force", snapshot_rc=2)
    assert forced.returncode == 0 and calls[-1] == "kexec -e"


def test_wrapper_dry_run_and_usage(tmp_path: Path) -> None:
    done, calls = _run_wrapper(tmp_path, "--dry-run", "-o", str(tmp_path / "s.json"))
    assert done.returncode == 0 and not any(c.startswith("kexec") for c in calls)
    bad, _ = _run_wrapper(tmp_path, "--bogus")
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


# --- the check unit's metrics for node_exporter's textfile collector -------------------------

CHECK_UNIT = SCRIPTS / "systemd" / "kho-inspect-check.service"
METRICS = '# TYPE kho_inspect_rule_status gauge\nkho_inspect_rule_status{rule="kho-active"} 1\n'


def _run_check_unit(tmp_path: Path, rc: int) -> "subprocess.CompletedProcess[str]":
    """The unit's ExecStart script as systemd runs it, with a stand-in kho-inspect that
    prints metrics and exits ``rc``, and the unit's paths moved under ``tmp_path``."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    _fake_bin(bindir, "kho-inspect", f"printf '{METRICS}'\n"
                                     f'echo "$*" > {tmp_path}/args\nexit {rc}\n')
    script = _exec_line(CHECK_UNIT, "ExecStart").replace(INSTALLED, str(bindir / "kho-inspect"))
    script = script.replace("/var/lib/kho-inspect", str(tmp_path / "state"))
    env = dict(os.environ, TEXTFILE_DIR=str(tmp_path / "textfile"))
    return subprocess.run(shlex.split(script), capture_output=True, text=True, env=env,
                          timeout=30)


def test_check_unit_default_textfile_directory() -> None:
    assert "Environment=TEXTFILE_DIR=/var/lib/prometheus/node-exporter" in CHECK_UNIT.read_text()
    [argv] = _kho_inspect_lines(CHECK_UNIT)
    assert argv[argv.index("--format") + 1] == "openmetrics" and "--output" in argv


@pytest.mark.parametrize("rc", [0, 1])
def test_check_unit_writes_the_metrics_file_whole(tmp_path: Path, rc: int) -> None:
    """The metrics reach ``kho-inspect.prom`` by a rename (node_exporter reads only
    ``*.prom``) whether the rules passed or one failed; the exit status stays check's."""
    done = _run_check_unit(tmp_path, rc)
    assert done.returncode == rc, done.stderr
    assert sorted(p.name for p in (tmp_path / "textfile").iterdir()) == ["kho-inspect.prom"]
    assert (tmp_path / "textfile" / "kho-inspect.prom").read_text() == METRICS
    assert f"--output {tmp_path}/state/check.json --format openmetrics" in \
        (tmp_path / "args").read_text()


def test_check_unit_keeps_the_last_metrics_when_it_cannot_inspect(tmp_path: Path) -> None:
    (tmp_path / "textfile").mkdir()
    (tmp_path / "textfile" / "kho-inspect.prom").write_text("old\n")
    done = _run_check_unit(tmp_path, 2)
    assert done.returncode == 2
    assert [p.name for p in (tmp_path / "textfile").iterdir()] == ["kho-inspect.prom"]
    assert (tmp_path / "textfile" / "kho-inspect.prom").read_text() == "old\n"

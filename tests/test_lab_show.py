# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect lab show`` on a run directory laid out as ``lab run`` leaves it:
the one-screen summary (verdict, check per stage, report directories), ``--all``,
text, Markdown and JSON through render.emit, filters, bad input."""

import json
from pathlib import Path

import pytest

from kho_inspect.cli import run
from kho_inspect.errors import EXIT_CANNOT_INSPECT
from kho_inspect.views.lab import check_cell, run_section

STAGE = {"verified": True, "problems": [], "release": "7.3.4", "test_kho": "preserved",
         "memfd_verified": None, "commands": {"memblock --json": 0, "kho status --json": 0},
         "before_kexec": {}, "host": {"commands": {"memblock --json": 0}}}
SUMMARY = {
    "ok": True, "problems": [], "hops": 1, "bzImage": "/k/bzImage", "vmlinux": "/k/vmlinux",
    "accel": "kvm", "memory_mib": 4096, "cpus": 2, "stage_append": {"n1": "quiet"},
    "stages": {"n0": dict(STAGE, kho_boot=False),
               "n1": dict(STAGE, kho_boot=True, memfd_verified=True,
                          test_kho="restore succeeded", host=None)},
}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    for stage in SUMMARY["stages"]:
        d = tmp_path / stage / "kho-inspect"
        d.mkdir(parents=True)
        (d / "memblock.txt").write_text(f"memblock of {stage}\n")
        (d / "memblock.json").write_text(json.dumps({"stage": stage}))
        (d / "memblock.txt.err").write_text("")
        (d / "kho-status.txt").write_text("KHO enabled\n")
        (d / "kho-status.json").write_text("{}")
        (d / "kho-status.txt.err").write_text("a warning\n")
        (d / "commands.json").write_text("[]")
    d = tmp_path / "n1" / "kho-inspect"
    (d / "check-previous-dmesg.json").write_text(json.dumps(CHECK))
    (d / "report").mkdir()
    (d / "report" / "report.md").write_text("# kho-inspect report\n")
    host = tmp_path / "n1" / "host" / "report"  # --cores: the host's, with the map
    host.mkdir(parents=True)
    for name in ("report.md", "report.json", "memory-map.svg"):
        (host / name).write_text("x\n")
    return tmp_path


CHECK = {"schema": "kho-inspect/check", "version": 1, "rules": [],
         "summary": {"pass": 25, "fail": 0, "skip": 1, "total": 26, "failed": []}}


def test_summary_is_one_screen(out: Path, capsys: pytest.CaptureFixture):
    assert run(["lab", "show", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == f"Lab run {out}: every stage verified"
    assert len(lines) <= 25, text
    n0 = next(line for line in lines if line.startswith("n0 "))
    n1 = next(line for line in lines if line.startswith("n1 "))
    assert n0.split()[:3] == ["n0", "7.3.4", "cold"] and n0.split()[-2:] == ["-", "yes"]
    assert "KHO" in n1 and "verified" in n1 and "25 passed, 0 failed, 1 skipped" in n1
    assert "3 ok" in n0 and "2 ok" in n1  # guest, before kexec and host exit codes
    guest = next(line for line in lines if f"{out}/n1/kho-inspect/report" in line)
    host = next(line for line in lines if f"{out}/n1/host/report" in line)
    assert guest.startswith("n1 ") and guest.endswith("no (no drawsvg where it ran)")
    assert host.startswith("n1 ") and host.endswith(" yes")
    assert f"kho-inspect lab show {out} --all" in text
    assert "lab kernel" not in text and "kernel /k/bzImage, accel kvm, 4096 MiB" in text
    assert "n1 boots with the extra words: quiet" in text
    assert "kho-inspect memblock" not in text  # the outputs only with --all


def test_summary_of_a_failed_run(out: Path, capsys: pytest.CaptureFixture):
    summary = json.loads((out / "summary.json").read_text())
    summary["ok"] = False
    summary["stages"]["n1"].update(verified=False, problems=["the memfd from n0 was not "
                                                             "verified"],
                                   commands={"check --previous x --json": 1})
    (out / "summary.json").write_text(json.dumps(summary))
    failed = dict(CHECK, summary=dict(CHECK["summary"], fail=1, failed=["preserved-reserved"]))
    (out / "n1" / "kho-inspect" / "check-previous-dmesg.json").write_text(json.dumps(failed))
    assert run(["lab", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Lab run {out}: FAILED (1 problem)\n")
    assert "FAILED: n1: the memfd from n0 was not verified" in text
    assert "1 of 1 failed" in text and "failed: preserved-reserved" in text


def test_check_cell():
    assert check_cell(None) == "-"
    assert check_cell(CHECK["summary"]) == "25 passed, 0 failed, 1 skipped"


def test_text(out: Path, capsys: pytest.CaptureFixture):
    assert run(["lab", "show", str(out), "--all"]) == 0
    text = capsys.readouterr().out
    assert f"Lab run {out}\n" in text
    assert "n1       7.3.4" in text and "restore succeeded" in text
    assert "kernel /k/bzImage" in text and "n1 boots with the extra words: quiet" in text
    assert "n0: kho-inspect memblock\n========================\nmemblock of n0" in text
    assert "n1: kho-inspect kho status" in text and "KHO enabled\na warning" in text


def test_json(out: Path, capsys: pytest.CaptureFixture):
    assert run(["lab", "show", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == SUMMARY
    assert doc["outputs"]["n1"]["memblock"] == {"stage": "n1"}
    assert doc["errors"] == {"n0": {"kho-status": "a warning"}, "n1": {"kho-status": "a warning"}}


def test_markdown_and_filters(out: Path, capsys: pytest.CaptureFixture):
    assert run(["lab", "show", str(out), "--stage", "n1", "--command", "memblock",
                "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "### n1: kho-inspect memblock\n\n```\nmemblock of n1\n```" in text
    assert "| stage" in text and "n0: kho-inspect" not in text and "kho status" not in text


@pytest.mark.parametrize("argv, message", [
    (["--stage", "n7"], "has no stage n7: its stages are n0, n1"),
    (["--command", "kho-nope"], "holds no output of kho-nope: the commands are kho-status, "
                                "memblock"),
])
def test_bad_filters(out: Path, capsys: pytest.CaptureFixture, argv, message):
    assert run(["lab", "show", str(out), *argv]) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_summary(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert run(["lab", "show", str(tmp_path)]) == EXIT_CANNOT_INSPECT
    assert "run kho-inspect lab run --out" in capsys.readouterr().err


def test_before_kexec_column_only_when_used():
    assert "before kexec" not in run_section(SUMMARY).headers
    stages = {name: dict(st, before_kexec={"snapshot -o x": 0})
              for name, st in SUMMARY["stages"].items()}
    section = run_section(dict(SUMMARY, stages=stages))
    assert section.headers[6] == "before kexec" and section.rows[0][6] == "0"

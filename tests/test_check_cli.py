# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho-inspect check end to end on synthetic kernels: N saves a snapshot with
the real ``snapshot`` command, N+1 is checked against it; exit codes 0/1/2,
the JSON report, the verdict at the end, and the kernels where rules skip."""

import json
import re
from pathlib import Path

import pytest
from synth.handover import N1_LOG, N_BLOCKS, disabled_kernel, kernel_n, kernel_n1

from kho_inspect.checks import catalogue
from kho_inspect.cli import Session, run
from kho_inspect.errors import EXIT_CANNOT_INSPECT, EXIT_OK, EXIT_USAGE, EXIT_VIOLATIONS
from kho_inspect.model.check import CHECK_SCHEMA
from kho_inspect.ranges import Range

MEMBLOCK_RULES = ("scratch-flagged", "extended-granular", "extended-not-cma",
                  "extended-no-preserved", "preserved-reserved", "memblock-sane")


@pytest.fixture(scope="module")
def n():
    return kernel_n()


@pytest.fixture(scope="module")
def previous(n, tmp_path_factory):
    path = tmp_path_factory.mktemp("n0") / "snapshot.json"
    assert run(["snapshot", "-o", str(path)], Session(program_=n.prog)) == EXIT_OK
    return str(path)


@pytest.fixture(scope="module")
def n1(n):
    return kernel_n1(n)


def check(prog, *argv):
    return run(["check", *argv], Session(program_=prog))


def report(capsys, prog, *argv, code=EXIT_OK):
    assert check(prog, *argv, "--json") == code
    return json.loads(capsys.readouterr().out)


def results(obj):
    return {r["id"]: r for r in obj["rules"]}


def test_a_good_handover_passes(capsys, n1, previous):
    obj = report(capsys, n1.prog, "--previous", previous, "--dmesg")
    assert obj["schema"] == CHECK_SCHEMA and obj["version"] == 1
    rules = results(obj)
    assert len(rules) == len(catalogue()) >= 15
    assert {r["status"] for r in rules.values()} <= {"pass", "skip"}
    for r in obj["rules"]:
        assert set(r) >= {"id", "status", "statement", "guarantee", "evidence", "reason"}
        assert r["reason"] and r["evidence"] == []
    for rule_id in ("kho-active", "handover-received", "chain-metadata", "scratch-inherited",
                    "scratch-cma", "preserved-reserved", "image-in-scratch",
                    "boot-allocations-in-scratch", "memblock-sane", *MEMBLOCK_RULES):
        assert rules[rule_id]["status"] == "pass", rules[rule_id]
    s = obj["summary"]
    assert (s["fail"], s["failed"], s["exit_status"]) == (0, [], 0)
    assert (s["release"], s["previous"], s["generation"]) == ("7.3.4-n1", "7.3.4-n0", "7.3")


def test_text_ends_with_the_verdict(capsys, n1, previous):
    assert check(n1.prog, "--previous", previous, "--dmesg") == EXIT_OK
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-3:-1] == ["Verdict", "======="]
    assert out[-1].endswith("skipped; details: --format json / --output FILE.")
    assert check(n1.prog, "--previous", previous, "--format", "markdown") == EXIT_OK
    assert "### Verdict" in capsys.readouterr().out


def test_output_file_is_the_json_report_too(capsys, n1, previous, tmp_path):
    out = tmp_path / "check.json"
    assert check(n1.prog, "--previous", previous, "--output", str(out)) == EXIT_OK
    text = capsys.readouterr().out
    assert text.rstrip().endswith(f"details: --output {out}.")
    saved = json.loads(out.read_text())
    assert saved["summary"]["exit_status"] == 0 and len(saved["rules"]) == len(catalogue())


def test_a_reservation_missing_in_n1_fails_with_the_range(capsys, n, previous):
    broken = kernel_n1(n, drop=1)
    obj = report(capsys, broken.prog, "--previous", previous, code=EXIT_VIOLATIONS)
    assert obj["summary"]["failed"] == ["preserved-reserved"]
    (evidence,) = results(obj)["preserved-reserved"]["evidence"]
    phys, order = N_BLOCKS[1]
    assert Range.from_json(evidence["range"]) == Range(phys, 4096 << order)
    assert evidence["owner"] == "preserved by N, order 9"
    assert check(broken.prog, "--previous", previous) == EXIT_VIOLATIONS
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed, 1 failed, \d+ skipped; failed: preserved-reserved; "
                        r"details: --format json / --output FILE\.", last), last


def test_without_previous_the_chain_rules_skip(capsys, n1):
    rules = results(report(capsys, n1.prog))
    for rule_id in ("handover-received", "chain-metadata", "scratch-inherited",
                    "preserved-reserved"):
        assert rules[rule_id]["status"] == "skip"
        assert rules[rule_id]["reason"].startswith("needs --previous")
    assert rules["boot-allocations-in-scratch"]["reason"].startswith("needs --bootlog or --dmesg")
    assert rules["scratch-cma"]["status"] == "pass"


def test_bootlog_file_is_the_same_as_dmesg(capsys, n1, previous, tmp_path):
    log = tmp_path / "console.log"
    log.write_text("".join(f"[    0.{i:06d}] {line}\n" for i, line in enumerate(N1_LOG)))
    from_file = results(report(capsys, n1.prog, "--previous", previous, "--bootlog", str(log)))
    from_dmesg = results(report(capsys, n1.prog, "--previous", previous, "--dmesg"))
    assert from_file["boot-allocations-in-scratch"] == from_dmesg["boot-allocations-in-scratch"]
    assert from_file["boot-allocations-in-scratch"]["status"] == "pass"


def test_discarded_memblock_skips_only_the_memblock_rules(capsys, n, previous):
    prog = kernel_n1(n, generation="discarded").prog
    rules = results(report(capsys, prog, "--previous", previous, "--dmesg"))
    for rule_id in MEMBLOCK_RULES:
        assert rules[rule_id]["status"] == "skip", rules[rule_id]
        assert "memblock not kept on this kernel" in rules[rule_id]["reason"]
    for rule_id in ("kho-active", "handover-received", "chain-metadata", "scratch-inherited",
                    "scratch-geometry", "scratch-cma", "preserved-not-in-scratch",
                    "radix-pages-not-in-scratch", "image-in-scratch",
                    "boot-allocations-in-scratch"):
        assert rules[rule_id]["status"] == "pass", rules[rule_id]
    # Without memblock flags, the early allocations are judged against what N left free.
    assert "1 GiB blocks free of the previous kernel's" in (
        rules["boot-allocations-in-scratch"]["reason"])


def test_kho_requested_but_not_active_fails(capsys):
    prog = disabled_kernel().prog
    obj = report(capsys, prog, code=EXIT_VIOLATIONS)
    rules = results(obj)
    assert obj["summary"]["failed"] == ["kho-active"]
    first = rules["kho-active"]["evidence"][0]
    assert "KHO was requested (kho=on on the command line) but the kernel disabled it" in (
        first["what"])
    assert first["lines"][:2] == ["KHO: Failed to reserve global scratch buffer",
                                  "KHO: Failed to reserve scratch area, disabling kexec handover"]
    assert any("global scratch area needed an unknown size" in e["what"]
               for e in rules["kho-active"]["evidence"])
    assert rules["scratch-geometry"]["status"] == "skip"
    assert "KHO was requested but is disabled" in rules["scratch-geometry"]["reason"]


def test_target_that_cannot_be_opened_is_exit_2(capsys, tmp_path):
    assert run(["--core", str(tmp_path / "no-such-vmcore"), "check"]) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert err.startswith("kho-inspect: error: ") and err.count("\n") == 1


def test_list_needs_no_target(capsys, tmp_path):
    core = ["--core", str(tmp_path / "no-such-vmcore")]
    assert run([*core, "check", "--list"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "kho-active" in out and "Kernel code that guarantees each rule" in out
    assert run([*core, "check", "--list", "--json"]) == EXIT_OK
    infos = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in infos] == [i.id for i in catalogue()]
    assert all(i["guarantee"] and i["statement"] for i in infos)


def test_rule_selection(capsys, n1, previous):
    obj = report(capsys, n1.prog, "--previous", previous, "--rule", "scratch-cma",
                 "--rule", "kho-active")
    assert [r["id"] for r in obj["rules"]] == ["kho-active", "scratch-cma"]
    assert check(n1.prog, "--rule", "bogus") == EXIT_CANNOT_INSPECT
    assert "There is no rule 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code, error", [
    (["--previous", "/nonexistent/snap.json"], EXIT_CANNOT_INSPECT, "Cannot read the snapshot"),
    (["--bootlog", "/nonexistent/log"], EXIT_CANNOT_INSPECT, "Cannot read /nonexistent/log"),
    (["--bootlog", "x", "--dmesg"], EXIT_USAGE, "mutually exclusive"),
])
def test_bad_input(capsys, n1, argv, code, error):
    assert check(n1.prog, *argv) == code
    assert error in capsys.readouterr().err


def test_previous_that_is_not_a_snapshot(capsys, n1, tmp_path: Path):
    path = tmp_path / "preserved.json"
    path.write_text('{"source": "out", "ranges": []}')
    assert check(n1.prog, "--previous", str(path)) == EXIT_CANNOT_INSPECT
    assert "is not a kho-inspect/snapshot document" in capsys.readouterr().err


def test_help_has_examples(capsys):
    assert run(["check", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Examples:" in out and "kho-inspect check --previous" in out
    assert "Exit codes: 0 every rule that ran passed, 1 a rule failed, 2" in " ".join(out.split())


def test_openmetrics_for_the_textfile_collector(capsys, n1, previous):
    """``check --format openmetrics`` parses with Prometheus' own OpenMetrics parser, has one
    series per rule and status, and keeps the exit status of the check."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    assert check(n1.prog, "--previous", previous, "--format", "openmetrics") == EXIT_OK
    text = capsys.readouterr().out
    families = {f.name: f for f in text_string_to_metric_families(text)}
    status = {(s.labels["rule"], s.labels["status"]): s.value
              for s in families["kho_inspect_rule_status"].samples}
    assert len(status) == 3 * len(catalogue())
    assert status[("chain-metadata", "pass")] == 1 and status[("chain-metadata", "fail")] == 0
    assert sum(status.values()) == len(catalogue())  # one status per rule

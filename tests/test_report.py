# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect report``: report.md and report.json against golden files, redaction,
and the command end to end on saved snapshots.

The golden files are tests/golden/report-guest.md and report-guest.json; after an
intended change of the output, rewrite them with
``KHO_INSPECT_UPDATE_GOLDEN=1 pytest tests/test_report.py`` and read the diff.
"""

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict

import pytest
from memmap_snapshots import MIB, guest, page_in_scratch, previous_guest
from synth.mm import FLAGS_73

from kho_inspect.bootlog import parse_bootlog
from kho_inspect.cli import run
from kho_inspect.errors import InputError
from kho_inspect.model.check import CheckReport, Evidence, RuleInfo, RuleResult
from kho_inspect.model.snapshot import snapshot_document
from kho_inspect.ranges import Range
from kho_inspect.report import FILES, ReportInputs, build
from kho_inspect.report.document import REPORT_SCHEMA, REPORT_VERSION
from kho_inspect.report.summary import trace_summary

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
BOOTLOG = HERE / "fixtures" / "bootlog" / "synthetic-7.3.txt"
UPDATE = os.environ.get("KHO_INSPECT_UPDATE_GOLDEN") == "1"
KERNEL_VA = re.compile(r"(0x)?ff[0-9a-f]{14}\b")


def _info(rule: str) -> RuleInfo:
    return RuleInfo(rule, f"statement of {rule}", "mm/memblock.c:1", f"docs#{rule}")


def golden_checks() -> CheckReport:
    """A fixed check run: the golden files do not change with the rules' wording."""
    bad = Range(0x7000_0000, 2 * MIB)
    return CheckReport((
        RuleResult(_info("kho-active"), "pass", "KHO is active"),
        RuleResult(_info("scratch-inherited"), "pass", "3 areas against 3"),
        RuleResult(_info("hugetlb-boot-outside-scratch"), "fail", "2 boot pages",
                   (page_in_scratch(bad),
                    Evidence("the FDT at 0xffff888003456000 names it", None, "kho_out.fdt",
                             lines=("KHO: fdt 0xffff888003456000",)))),
        RuleResult(_info("boot-allocations-in-scratch"), "skip", "needs --bootlog"),
    ), release="7.3.4-n1", previous="7.3.4-n0", generation="7.3")


def golden_inputs() -> ReportInputs:
    log = parse_bootlog(BOOTLOG.read_text(), FLAGS_73)
    trace = trace_summary({"events": [{"event": "memblock_alloc"}, {"event": "memblock_alloc"},
                                      {"type": "kho_preserve_folio"}, {"other": 1}]})
    return ReportInputs(guest(), golden_checks(), previous_guest(), log, trace,
                        {"previous": "n0/snapshot.json", "bootlog": "n1/dmesg",
                         "trace": "trace.json"})


@pytest.fixture(scope="module")
def files() -> Dict[str, str]:
    return build(golden_inputs())


@pytest.mark.parametrize("name, golden", [(FILES["markdown"], "report-guest.md"),
                                          (FILES["json"], "report-guest.json")])
def test_matches_golden(files, name, golden):
    path = GOLDEN / golden
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(files[name])
    assert path.exists(), f"{path} is missing: run with KHO_INSPECT_UPDATE_GOLDEN=1"
    assert files[name] == path.read_text(), \
        f"{name} differs from {path}; if the change is intended, KHO_INSPECT_UPDATE_GOLDEN=1"


def test_markdown_has_every_chapter(files):
    md = files[FILES["markdown"]]
    chapters = re.findall(r"^## (.+)$", md, re.M)
    assert chapters[:6] == ["Kernel", "Checks", "memblock", "KHO scratch", "Preserved memory",
                            "Gigantic pages"]
    assert {"Boot log", "Trace"} <= set(chapters)
    assert any(c.startswith("Changes since the previous kernel") for c in chapters)
    assert "![Physical memory map](memory-map.svg)" in md
    assert "### FAIL hugetlb-boot-outside-scratch" in md
    assert "`console=ttyS0 kho=on" in md  # the command line


def test_json_is_a_versioned_document(files):
    doc = json.loads(files[FILES["json"]])
    assert (doc["schema"], doc["version"]) == (REPORT_SCHEMA, REPORT_VERSION)
    assert doc["redacted"] is True
    assert doc["checks"]["summary"]["failed"] == ["hugetlb-boot-outside-scratch"]
    assert doc["preserved"]["out"]["by_order"]["12"] == {"blocks": 1, "bytes": 16 * MIB}
    assert [p["class"] for p in doc["hugetlb"]["pages"]] == ["other", "other"]
    assert doc["bootlog"]["window"]["start_line"] == 4
    assert doc["trace"]["events"] == 4
    assert doc["diff"]["names"] == ["7.3.4-n0", "7.3.4-n1"]
    assert doc["snapshot"]["release"] == "7.3.4-n1"


def test_kernel_addresses_are_redacted_physical_ones_kept(files):
    for name, text in files.items():
        assert not KERNEL_VA.search(text), name
    doc = json.loads(files[FILES["json"]])
    assert doc["snapshot"]["fdt_out"]["address"] == "<kva-1>"
    assert doc["snapshot"]["fdt_in"]["address"] == 0x1_0345_6000  # physical: kept
    assert "<kva-1>" in files[FILES["markdown"]]  # the evidence sentence


def test_no_redact_keeps_them():
    files = build(golden_inputs(), redact=False)
    doc = json.loads(files[FILES["json"]])
    assert doc["redacted"] is False
    assert doc["snapshot"]["fdt_out"]["address"] == 0xFFFF_8880_0345_6000
    assert "0xffff888003456000" in files[FILES["markdown"]]


def test_map_is_in_the_report(files):
    root = ET.fromstring(files[FILES["map"]])
    ids = {g.get("id") for g in root.iter("{http://www.w3.org/2000/svg}g")}
    assert {"lane-memory", "lane-scratch", "legend", "violation-list"} <= ids


def test_trace_must_be_an_events_list():
    with pytest.raises(InputError, match="must be a JSON object with an \"events\" list"):
        trace_summary([1, 2])
    assert trace_summary({"events": []})["events"] == 0


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Dict[str, str]:
    n0, n1, trace = tmp_path / "n0.json", tmp_path / "n1.json", tmp_path / "trace.json"
    n0.write_text(json.dumps(snapshot_document(previous_guest())))
    n1.write_text(json.dumps(snapshot_document(guest())))
    trace.write_text(json.dumps({"events": [{"event": "memblock_alloc"}]}))
    return {"n0": str(n0), "n1": str(n1), "trace": str(trace), "out": str(tmp_path / "rep")}


def test_cli_writes_the_directory(saved, capsys):
    code = run(["report", "-o", saved["out"], "--snapshot", saved["n1"], "--previous",
                saved["n0"], "--bootlog", str(BOOTLOG), "--trace", saved["trace"]])
    out = Path(saved["out"])
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())
    doc = json.loads((out / FILES["json"]).read_text())
    assert code == doc["checks"]["summary"]["exit_status"]
    assert doc["sources"] == {"snapshot": saved["n1"], "previous": saved["n0"],
                              "bootlog": str(BOOTLOG), "trace": saved["trace"]}
    assert doc["tool"].startswith("kho-inspect ")
    assert f"report written to {saved['out']}" in capsys.readouterr().out


@pytest.mark.parametrize("args, code, words", [
    (["--trace", "{missing}"], 2, "Cannot read"),
    (["--trace", "{n0}"], 2, "is not a trace"),
    (["--dmesg"], 2, "--dmesg reads the target"),
    (["--previous", "{trace}"], 2, "is not a kho-inspect/snapshot document"),
])
def test_cli_bad_input(saved, capsys, args, code, words):
    args = [a.format(missing=saved["out"] + "/nope.json", **saved) for a in args]
    assert run(["report", "-o", saved["out"], "--snapshot", saved["n1"], *args]) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_without_drawsvg_the_report_says_why(monkeypatch):
    """The lab guest runs kho_inspect from Debian packages, which lack drawsvg."""
    from kho_inspect.errors import KhoInspectError
    from kho_inspect.views import memmap

    monkeypatch.setattr(memmap, "draw", None)
    files = build(golden_inputs())
    assert sorted(files) == sorted([FILES["markdown"], FILES["json"]])
    assert "The memory map was not drawn: no map: the memory map needs the drawsvg package" \
        in files[FILES["markdown"]]
    assert "map" not in json.loads(files[FILES["json"]])["files"]
    with pytest.raises(KhoInspectError, match="pip install drawsvg"):
        memmap.memory_map(guest())

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
The report every KHO boot of the lab's handover run writes (conftest.py): the
guest runs ``report -o nK/kho-inspect/report --previous n(K-1)/snapshot.json
--dmesg`` in the batch that runs the other commands, and the host, at the
``--cores`` pause, the same into ``nK/host/report``. The guest's Python has no
drawsvg (Debian does not package it), so only the host's report has the memory
map; it is judged against the kernel's own debugfs files of that kernel: the
1 GiB pages (``memblock/reserved`` RSV_HUGETLB), the scratch areas
(``kho/out/scratch_*``) and what N preserved (``memblock/reserved`` RSV_NIT,
which a KHO boot sets on every range it restores).
"""

import json
import re
import xml.etree.ElementTree as ET
from typing import Dict, List

import pytest

from kho_inspect.ranges import Range, RangeSet

from .conftest import STAGES, LabRun
from .debugfs import parse_regions
from .test_check import CHECK, statuses
from .test_handover import _debugfs_scratch

pytestmark = pytest.mark.lab

KHO_BOOTS = STAGES[1:]
FILES = ("report.md", "report.json", "memory-map.svg")
SVG = "{http://www.w3.org/2000/svg}"
GIB = 1 << 30
_RANGE = re.compile(r"\[0x([0-9a-f]+)-0x([0-9a-f]+)\]")
_GROUP = re.compile(r"^\d+ preserved ranges, [^,]+, 0x([0-9a-f]+)-0x([0-9a-f]+)$")


def _lanes(lab: LabRun, stage: str) -> Dict[str, List[str]]:
    """``{lane id: [tooltip titles]}`` of the stage's memory map."""
    root = ET.parse(lab.stage(stage) / "host" / "report" / "memory-map.svg").getroot()
    return {g.get("id", ""): [t.text or "" for t in g.iter(f"{SVG}title")]
            for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("lane-")}


def _ranges(titles: List[str], prefix: str) -> List[Range]:
    out = []
    for title in titles:
        m = _RANGE.search(title)
        if title.startswith(prefix) and m:
            first, last = int(m.group(1), 16), int(m.group(2), 16)
            out.append(Range(first, last - first + 1))
    return out


def _reserved(lab: LabRun, stage: str, flag: str) -> RangeSet:
    text = (lab.stage(stage) / "memblock" / "reserved").read_text()
    return RangeSet(Range(r.base, r.size) for r in parse_regions(text) if flag in r.flags)


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_report_written_in_guest_and_host(lab: LabRun, stage: str) -> None:
    host, guest = lab.stage(stage) / "host" / "report", lab.stage(stage) / "kho-inspect" / "report"
    assert all((host / f).stat().st_size for f in FILES), stage
    assert all((guest / f).stat().st_size for f in FILES if not f.endswith(".svg")), stage
    if not (guest / "memory-map.svg").exists():
        assert "The memory map was not drawn" in (guest / "report.md").read_text()
    codes = lab.stage_json(stage)["commands"]
    assert [code for command, code in codes.items() if command.startswith("report ")] == [0]
    assert "kho-inspect/report" not in json.dumps(lab.summary["stages"][stage]["host"])


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_report_judges_as_check(lab: LabRun, stage: str) -> None:
    doc = json.loads((lab.stage(stage) / "kho-inspect" / "report" / "report.json").read_text())
    assert doc["checks"]["summary"]["fail"] == 0
    assert statuses(doc["checks"]) == statuses(lab.guest(stage, CHECK))
    assert doc["sources"]["previous"].endswith(f"/n{int(stage[1:]) - 1}/snapshot.json")


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_map_shows_the_gigantic_pages(lab: LabRun, stage: str) -> None:
    pages = _ranges(_lanes(lab, stage)["lane-hugetlb"], "gigantic page")
    assert pages and all(p.size == GIB for p in pages)
    assert RangeSet(pages) == _reserved(lab, stage, "RSRV_HUGETLB")


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_map_shows_the_scratch_classes(lab: LabRun, stage: str) -> None:
    titles = _lanes(lab, stage)["lane-scratch"]
    areas = sorted(_ranges(titles, "kho_scratch["), key=lambda r: r.base)
    assert [(r.base, r.size) for r in areas] == sorted(_debugfs_scratch(lab, stage))
    assert _ranges(titles, "extended scratch"), stage
    # The original class is drawn as the labelled kho_scratch[] areas (checked above); an
    # unlabelled "original scratch" span is left only where the class is not exactly an area.
    assert RangeSet(areas).covers(RangeSet(_ranges(titles, "original scratch"))), stage


@pytest.mark.parametrize("stage", KHO_BOOTS)
def test_map_shows_what_n_preserved(lab: LabRun, stage: str) -> None:
    titles = _lanes(lab, stage)["lane-preserved_in"]
    singles = RangeSet(_ranges(titles, "preserved ["))
    # Where ranges are too many to draw one by one, the map draws one span per group
    # ("150 preserved ranges, 2.8 MiB, 0xA-0xB"): its first and last bytes are preserved.
    # How many of each depends on how fragmented N's preserved memory was.
    ends = RangeSet(Range(int(end, 16), 1) for m in map(_GROUP.match, titles) if m
                    for end in m.groups())
    assert singles or ends, titles
    noinit = _reserved(lab, stage, "RSRV_NOINIT")
    assert noinit.covers(singles) and noinit.covers(ends), stage
    assert _lanes(lab, stage)["lane-violations"] == []

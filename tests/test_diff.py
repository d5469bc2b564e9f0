# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect diff``: what changed between two snapshots (pure diff, view, CLI)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from memmap_snapshots import GIB, MIB, guest, previous_guest

from kho_inspect.cli import run
from kho_inspect.diff import HANDOVER, diff_snapshots
from kho_inspect.model.hugetlb import HugePage
from kho_inspect.model.memblock import Region
from kho_inspect.model.snapshot import snapshot_document
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.render import Section
from kho_inspect.views.diff import sections


def test_a_snapshot_does_not_differ_from_itself():
    snap = guest()
    d = diff_snapshots(snap, snap)
    assert d.empty and not d.items and not d.fields
    assert all(r.same for r in d.ranges if r.compared and r.name != HANDOVER)
    assert sections(d)[-1].notes[0] == "No differences."


def test_handover_from_n_to_n_plus_1():
    before, after = previous_guest(), guest()
    d = diff_snapshots(before, after, ("N", "N+1"))
    fields = {f.name: (f.before, f.after) for f in d.fields}
    assert fields["release"] == ("7.3.4-n0", "7.3.4-n1")
    assert fields["kho_boot"] == (False, True) and fields["kexec_count"] == (0, 1)
    handover = next(r for r in d.ranges if r.name == "handover")
    assert handover.labels == ("preserved by N", "received by N+1")
    assert before.preserved_out is not None and after.preserved_in is not None
    assert handover.before == before.preserved_out.range_set()
    assert handover.after == after.preserved_in.range_set()
    assert handover.same  # N+1 received exactly what N preserved
    pages = d.section("gigantic pages")
    assert [(i.kind, i.key) for i in pages] == [("added", 5 * GIB), ("added", 6 * GIB)]
    # N had no incoming preserved memory: said, not compared
    incoming = next(r for r in d.ranges if r.name == "preserved in")
    assert not incoming.compared and "not booted through KHO" in (incoming.missing or "")


def test_moved_scratch_area_changed_region_and_page():
    a = guest()
    assert a.scratch is not None and a.memblock is not None and a.hugetlb is not None
    areas = list(a.scratch.areas)
    areas[1] = replace(areas[1], addr=areas[1].addr + 64 * MIB)
    reserved = list(a.memblock.reserved.regions)
    first = reserved[1]
    reserved[1] = Region(first.base, first.size, ("RSRV_NOINIT",), first.nid)
    b = replace(
        a,
        scratch=replace(a.scratch, areas=tuple(areas)),
        memblock=replace(a.memblock, types=dict(
            a.memblock.types, reserved=replace(a.memblock.reserved, regions=tuple(reserved)))),
        hugetlb=replace(a.hugetlb, pages=(replace(a.hugetlb.pages[0], state="in use"),
                                          HugePage(7 * GIB, GIB, 0, "buddy", "free"))),
        preserved_out=replace(a.preserved_out, ranges=a.preserved_out.ranges[1:]),
    )
    d = diff_snapshots(a, b)
    area = d.section("scratch areas")
    assert [(i.kind, i.key, i.changed) for i in area] == [("changed", 1, ("addr",))]
    region = d.section("memblock.reserved")
    assert [(i.kind, i.key, i.changed) for i in region] == [("changed", first.base, ("flags",))]
    assert region[0].before["flags"] == list(first.flags)
    every = ("phys", "size", "node", "origin", "state")
    pages = [(i.kind, i.key, i.changed) for i in d.section("gigantic pages")]
    assert pages == [("changed", 5 * GIB, ("state",)), ("removed", 6 * GIB, every),
                     ("added", 7 * GIB, every)]
    out = next(r for r in d.ranges if r.name == "preserved out")
    phys, size, _ = a.preserved_out.ranges[0]
    assert out.removed == RangeSet([Range(phys, size)]) and not out.added
    titles = [s.title for s in sections(d)]
    assert {"Kernels", "Physical ranges", "Ranges added and removed", "scratch areas",
            "memblock.reserved", "gigantic pages"} <= set(titles)


def test_missing_sections_are_named_not_compared():
    a = guest()
    b = replace(a, memblock=None, hugetlb=None,
                missing={"memblock": "memblock was discarded after boot",
                         "hugetlb": "hugetlb: no gigantic hstate"})
    d = diff_snapshots(a, b, ("N", "N+1"))
    assert "memblock.memory not compared: N+1: memblock was discarded after boot" in d.notes
    assert "gigantic pages not compared: N+1: hugetlb: no gigantic hstate" in d.notes
    assert not d.section("memblock.memory")
    json.dumps(d.to_json())


# --- the command ---------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path):
    a, b = tmp_path / "n0.json", tmp_path / "n1.json"
    a.write_text(json.dumps(snapshot_document(previous_guest())))
    b.write_text(json.dumps(snapshot_document(guest())))
    return str(a), str(b)


def test_cli_text_and_json(files, capsys):
    assert run(["diff", *files]) == 0
    text = capsys.readouterr().out
    assert "Physical ranges" in text and "handover (preserved by 7.3.4-n0 -> received by " \
        "7.3.4-n1)" in text
    assert run(["diff", *files, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "kho-inspect/diff" and doc["version"] == 1
    assert doc["diff"]["names"] == ["7.3.4-n0", "7.3.4-n1"]


def test_cli_redacts_kernel_addresses(tmp_path, capsys):
    a = guest()
    assert a.fdt_out is not None
    b = replace(a, fdt_out=replace(a.fdt_out, address=0xFFFF_8880_0999_0000),
                command_line="console=ttyS0 fdt at 0xffff888009990000")
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(snapshot_document(a)))
    pb.write_text(json.dumps(snapshot_document(b)))
    assert run(["diff", str(pa), str(pb)]) == 0
    text = capsys.readouterr().out
    assert "ffff888009990000" not in text and "<kva-1>" in text
    assert run(["diff", str(pa), str(pb), "--no-redact"]) == 0
    assert "0xffff888009990000" in capsys.readouterr().out


def test_cli_bad_file_is_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert run(["diff", str(bad), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kho-inspect: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_sections_are_sections():
    d = diff_snapshots(previous_guest(), guest())
    assert all(isinstance(s, Section) for s in sections(d))

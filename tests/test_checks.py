# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho-inspect check: the rule engine, the catalogue, the models, and every rule
passing on a clean handover of every kernel generation.

The per-rule failures are in tests/test_checks_*.py. All data is plain model
objects (tests/synth/snapshot.py); nothing here needs drgn.
"""

import json
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synth.snapshot import (
    GIB,
    IMAGE,
    KERN_ALLOC,
    MACHINES,
    MIB,
    bootlog,
    cold,
    handover,
    judge,
)

from kho_inspect.checks import RULES, catalogue, run_checks
from kho_inspect.checks.context import Spans, busy_blocks
from kho_inspect.errors import InputError
from kho_inspect.model.base import from_json, to_json
from kho_inspect.model.check import CheckReport, Evidence, RuleInfo, RuleResult
from kho_inspect.model.diagnosis import KhoActivation, ScratchNeed, ScratchSizing, SizingDriver
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.snapshot import (
    SNAPSHOT_SCHEMA,
    Snapshot,
    generation_of,
    load_snapshot_document,
    snapshot_document,
)
from kho_inspect.ranges import Range, RangeSet

# What needs memblock flags, and so skips where memblock was discarded.
NEEDS_MEMBLOCK = {"scratch-flagged", "extended-granular", "extended-not-cma",
                  "extended-no-preserved", "preserved-reserved", "hugetlb-boot-in-extended",
                  "memblock-sane"}
# Judged on a cold boot only.
COLD_ONLY = {"scratch-sizing-hugetlb"}
NEEDS_TRACE = {"trace-preserve-outside-scratch", "trace-contig-outside-scratch"}  # check --trace
# Judged on a KHO boot only.
KHO_BOOT_ONLY = {"handover-received", "handover-abi", "chain-metadata", "scratch-inherited",
                 "extended-granular", "extended-not-cma", "extended-no-preserved",
                 "preserved-reserved", "reserve-mem-revived", "image-in-scratch",
                 "boot-allocations-in-scratch", "hugetlb-boot-in-extended",
                 "hugetlb-boot-unpreserved-blocks"}

CLEAN_LOG = bootlog((KERN_ALLOC, "alloc_node_data"), (IMAGE, "setup_arch"))


# --- catalogue ----------------------------------------------------------------


def test_catalogue_has_at_least_15_rules_with_stable_ids() -> None:
    infos = catalogue()
    ids = [i.id for i in infos]
    assert len(ids) >= 15
    assert len(set(ids)) == len(ids)
    assert ids == list(dict.fromkeys(ids))
    assert ids[0] == "kho-active"
    for info in infos:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", info.id), info.id
        assert info.statement.endswith("."), info.id
        assert re.search(r"[\w/.-]+\.[ch]:\d+", info.guarantee), info.id
        assert info.docs == f"docs/kernel/invariants.md#{info.id}"


def test_the_catalogue_is_the_registry() -> None:
    assert {i.id for i in catalogue()} == set(RULES)


def test_unknown_rule_is_an_input_error() -> None:
    cur, prev = handover()
    with pytest.raises(InputError) as err:
        run_checks(cur, prev, only=["scratch-inherted"])
    assert err.value.name == "scratch-inherted"
    assert "scratch-inherited" in err.value.available


def test_only_runs_the_rules_named_in_catalogue_order() -> None:
    cur, prev = handover()
    report = run_checks(cur, prev, only=["memblock-sane", "kho-active"])
    assert [r.id for r in report.results] == ["kho-active", "memblock-sane"]


# --- the clean handover passes everywhere ---------------------------------------------


@pytest.mark.parametrize("machine", list(MACHINES))
def test_clean_handover_passes_every_rule_that_runs(machine: str) -> None:
    m = MACHINES[machine]
    cur, prev = handover(m)
    report = run_checks(cur, prev, CLEAN_LOG)
    skipped = {r.id for r in report.by_status("skip")}
    expected = COLD_ONLY | NEEDS_TRACE | (NEEDS_MEMBLOCK if not m.keep else set())
    assert not report.by_status("fail"), [(r.id, r.evidence) for r in report.by_status("fail")]
    assert skipped == expected, {r.id: r.reason for r in report.by_status("skip")}
    assert report.exit_status == 0
    assert report.generation == ("7.3" if m.generation == "7.3" else "unpreserved-flag")


@pytest.mark.parametrize("machine", list(MACHINES))
def test_cold_boot_passes_and_skips_what_needs_a_handover(machine: str) -> None:
    m = MACHINES[machine]
    report = run_checks(cold(m))
    assert not report.by_status("fail")
    skipped = {r.id: r.reason for r in report.by_status("skip")}
    assert set(skipped) == KHO_BOOT_ONLY | NEEDS_TRACE | ({"memblock-sane", "scratch-flagged"}
                                                          if not m.keep else set())
    assert skipped["scratch-inherited"].startswith("this kernel was cold booted")
    assert skipped["handover-received"].startswith("needs --previous")


def test_discarded_memblock_skips_say_so() -> None:
    cur, prev = handover(MACHINES["discarded"])
    report = run_checks(cur, prev, CLEAN_LOG)
    for rule in NEEDS_MEMBLOCK:
        assert report.get(rule).reason.startswith("memblock not kept on this kernel"), rule
    # What kho_scratch[], migratetypes, hugetlb folios and the snapshot can judge ran.
    for rule in ("scratch-inherited", "scratch-geometry", "scratch-cma",
                 "preserved-not-in-scratch", "radix-pages-not-in-scratch", "image-in-scratch",
                 "hugetlb-boot-outside-scratch", "hugetlb-boot-unpreserved-blocks",
                 "boot-allocations-in-scratch", "reserve-mem-revived"):
        assert report.get(rule).status == "pass", rule


def test_without_previous_or_bootlog_the_reasons_name_the_option() -> None:
    cur, _ = handover()
    report = run_checks(cur)
    assert report.get("scratch-inherited").reason.startswith("needs --previous")
    assert report.get("boot-allocations-in-scratch").reason.startswith("needs --bootlog")
    assert report.get("chain-metadata").reason.startswith("needs --previous")


# --- the report and its JSON ---------------------------------------------------------


def test_report_json_shape_and_exit_status() -> None:
    cur, prev = handover()
    broken = replace(cur, image=Range(3 * GIB, 16 * MIB))
    report = run_checks(broken, prev)
    obj = report.to_json()
    assert set(obj) == {"rules", "summary"}
    rule = next(r for r in obj["rules"] if r["id"] == "image-in-scratch")
    assert set(rule) >= {"id", "status", "statement", "guarantee", "evidence", "reason"}
    assert rule["status"] == "fail"
    assert rule["evidence"][0]["range"] == {"base": 3 * GIB, "size": 16 * MIB}
    assert rule["evidence"][0]["owner"] == "kernel image"
    assert obj["summary"]["failed"] == ["image-in-scratch"]
    assert obj["summary"]["exit_status"] == 1 == report.exit_status
    assert obj["summary"]["fail"] == 1
    assert obj["summary"]["pass"] + obj["summary"]["skip"] + 1 == obj["summary"]["total"]
    json.dumps(obj)
    assert CheckReport.from_json(json.loads(json.dumps(obj))) == report


def test_exit_status_ignores_skips() -> None:
    info = RuleInfo("x-y", "s.", "a.c:1", "d")
    assert CheckReport((RuleResult(info, "skip", "needs --previous"),)).exit_status == 0
    assert CheckReport((RuleResult(info, "pass"), RuleResult(info, "fail", "", (
        Evidence("bad"),)))).exit_status == 1
    with pytest.raises(ValueError):
        RuleResult(info, "maybe")


def test_evidence_json_round_trip() -> None:
    ev = Evidence("w", Range(1, 2), "owner", "original", ("KHO_SCRATCH",), [1, "a"], 3, ("l",))
    obj = ev.to_json()
    assert obj["class"] == "original" and obj["flags"] == ["KHO_SCRATCH"]
    back = Evidence.from_json(json.loads(json.dumps(obj)))
    assert back == replace(ev, expected=(1, "a"))


@pytest.mark.parametrize("machine", list(MACHINES))
def test_snapshot_document_round_trip(machine: str) -> None:
    cur, prev = handover(MACHINES[machine])
    for snap in (cur, prev):
        doc = json.loads(json.dumps(snapshot_document(snap)))
        assert doc["schema"] == SNAPSHOT_SCHEMA
        back = load_snapshot_document(doc)
        assert back == snap
        assert run_checks(back, prev).to_json() == run_checks(snap, prev).to_json()


def test_snapshot_document_refuses_other_documents() -> None:
    with pytest.raises(InputError, match="not a kho-inspect/snapshot document"):
        load_snapshot_document({"schema": "kho-inspect/check", "version": 1})
    with pytest.raises(InputError, match="damaged"):
        load_snapshot_document({"schema": SNAPSHOT_SCHEMA, "version": 1, "snapshot": {
            "memblock_flags": "nope"}})


def test_activation_round_trip_and_states() -> None:
    act = KhoActivation(
        "disabled", "kho_reserve_scratch() failed", "kho=on on the command line",
        ("KHO: Failed to reserve global scratch buffer",),
        ScratchSizing("scale", 200, None, 5 * GIB, 0, 8 * GIB,
                      (ScratchNeed("lowmem", 212 * MIB, None, True, 0x1000_0000),
                       ScratchNeed("global", 4557 * MIB, 3 * GIB, False)),
                      (SizingDriver("hugetlb_cma node 0", 2 * GIB, True, 4 * GIB, 0),),
                      "kernel log"), False)
    assert from_json(KhoActivation, json.loads(json.dumps(to_json(act)))) == act
    assert act.requested and not act.active
    assert act.sizing is not None and act.sizing.needed == 4769 * MIB
    assert [n.area for n in act.sizing.failed] == ["global"]
    with pytest.raises(ValueError):
        KhoActivation("off", "")


def test_generation_is_read_from_flag_names() -> None:
    assert {m.generation: generation_of(m.flags) for m in MACHINES.values()} == {
        "7.3": "7.3", "series-v1": "unpreserved-flag", "unpreserved": "unpreserved-flag"}
    assert Snapshot().generation == "no-scratch-flag"


def test_rules_are_pure() -> None:
    # The same inputs give the same report, and the inputs are not changed.
    cur, prev = handover()
    before = to_json(cur)
    first = run_checks(cur, prev, CLEAN_LOG).to_json()
    assert run_checks(cur, prev, CLEAN_LOG).to_json() == first
    assert to_json(cur) == before


def test_one_rule_helper() -> None:
    cur, prev = handover()
    assert judge("kho-active", cur).status == "pass"


# --- the view -----------------------------------------------------------------------


def test_view_has_a_row_per_rule_and_a_section_per_failure() -> None:
    from kho_inspect.views.check import catalogue_sections, sections

    cur, prev = handover()
    report = run_checks(replace(cur, image=Range(3 * GIB, 16 * MIB)), prev)
    summary, failure = sections(report)
    assert [row[0] for row in summary.rows] == [i.id for i in catalogue()]
    assert dict((r[0], r[1]) for r in summary.rows)["image-in-scratch"] == "FAIL"
    assert summary.notes[-1].endswith("exit status 1.")
    assert failure.title == "FAIL image-in-scratch"
    (row,) = failure.rows
    assert row[:6] == ("0xc0000000", "0xc0ffffff", "16 MiB", "kernel image", "extended",
                       "KHO_SCRATCH")
    rules, guarantees = catalogue_sections(catalogue())
    assert len(rules.rows) == len(guarantees.rows) == len(catalogue())


# --- the sweeps against naive versions -------------------------------------------------


_spans = st.lists(st.tuples(st.integers(0, 1 << 14), st.integers(0, 1 << 10)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(_spans, _spans)
def test_spans_sweeps_match_a_naive_scan(items, zone_items) -> None:
    spans = Spans((b, s, n) for n, (b, s) in enumerate(items))
    zone = RangeSet(Range(b, s) for b, s in zone_items)
    hit = {spans.tags[i] for i in spans.overlapping(zone)}
    miss = {spans.tags[i] for i in spans.outside(zone)}
    assert hit == {n for n, (b, s) in enumerate(items) if s and zone.overlaps(Range(b, s))}
    assert miss == {n for n, (b, s) in enumerate(items) if s and not zone.covers(Range(b, s))}
    assert spans.overlapping(zone) == sorted(spans.overlapping(zone))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 20)), max_size=20),
       st.lists(st.integers(0, 1 << 26), max_size=5))
def test_busy_blocks_match_a_naive_scan(blocks, tree) -> None:
    ranges = tuple((pfn << 22, 4096 << order, order) for pfn, order in blocks)
    pages = tuple(p << 12 for p in tree)
    report = PreservedReport("out", ranges, pages)
    naive = RangeSet([Range(b << 30, GIB) for p, s, _ in ranges
                      for b in range(p >> 30, ((p + s - 1) >> 30) + 1)]
                     + [Range((p >> 30) << 30, GIB) for p in pages])
    assert busy_blocks(report) == naive


def test_a_kernel_without_kho_skips_everything_with_one_reason() -> None:
    snap = Snapshot(release="6.1", activation=KhoActivation("not built", "no kho_out"),
                    missing={"status": "KHO is not built", "scratch": "KHO is not built",
                             "preserved_out": "KHO is not built",
                             "hugetlb": "no gigantic hstate",
                             "memblock": "memblock was discarded after boot"})
    report = run_checks(snap)
    assert not report.by_status("fail") and not report.by_status("pass")
    assert report.get("kho-active").reason == "this kernel was built without CONFIG_KEXEC_HANDOVER"
    assert report.get("image-in-scratch").reason == report.get("kho-active").reason
    assert report.exit_status == 0


def test_fdt_summary_of_a_decoded_root_fdt() -> None:
    # What H7 passes to fdt_summary(): read_kho_fdt()'s report, here built by hand.
    from synth.kho import kexec_metadata_blob, kho_root_fdt, memblock_blob

    from kho_inspect.fdt import decode_blob, decode_kho_root
    from kho_inspect.model.kho import BlobReport, KhoFdtReport
    from kho_inspect.model.snapshot import fdt_summary

    meta = kexec_metadata_blob("7.3.4-n0", 1)
    mblock = memblock_blob([("foo", 4 * GIB, 64 * MIB)])
    data = kho_root_fdt(10 * GIB, [("kexec-metadata", 0x1000, len(meta)),
                                   ("memblock", 0x2000, len(mblock)), ("LUO", 0x3000, 32)])
    blobs = {"kexec-metadata": BlobReport("kexec-metadata", 0x1000, len(meta), meta,
                                          decode_blob("kexec-metadata", meta)),
             "memblock": BlobReport("memblock", 0x2000, len(mblock), mblock,
                                    decode_blob("memblock", mblock)),
             "LUO": BlobReport("LUO", 0x3000, 32, None, None, "cannot read 0x3000")}
    report = KhoFdtReport("in", 0x5000, True, data, decode_kho_root(data), blobs)
    summary = fdt_summary(report)
    assert (summary.direction, summary.compatible, summary.mem_map_phys) == (
        "in", "kho-v4", 10 * GIB)
    assert summary.kexec_metadata is not None
    assert (summary.kexec_metadata.previous_release, summary.kexec_metadata.kexec_count) == (
        "7.3.4-n0", 1)
    assert [(e.name, e.start, e.size) for e in summary.reserve_mem] == [
        ("foo", 4 * GIB, 64 * MIB)]
    assert [b.name for b in summary.blobs] == ["kexec-metadata", "memblock", "LUO"]
    assert summary.blob("memblock").range == Range(0x2000, len(mblock))
    assert summary.problems == ("blob LUO: cannot read 0x3000",)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""OpenMetrics output of a check run, read back by prometheus_client's own parsers
(the strict OpenMetrics one and the Prometheus text one node_exporter's
textfile collector speaks)."""

from dataclasses import replace
from typing import Dict, Tuple

import pytest
from memmap_snapshots import checks, guest, host, page_in_scratch
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from kho_inspect.model.check import STATUSES
from kho_inspect.ranges import Range
from kho_inspect.views.metrics import openmetrics

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample as ``{(name, sorted labels): value}``, parsed strictly."""
    out: Samples = {}
    for family in parse_openmetrics(text):
        assert family.type == "gauge", family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: Samples, name: str, **labels: object) -> float:
    return found[(f"kho_inspect_{name}", tuple(sorted((k, str(v)) for k, v in labels.items())))]


@pytest.fixture(scope="module")
def failing() -> Tuple[str, Samples]:
    report = checks({"hugetlb-boot-outside-scratch": [page_in_scratch(Range(0x7000_0000,
                                                                               1 << 21))]},
                    {"boot-allocations-in-scratch": "needs --bootlog"})
    text = openmetrics(report, guest())
    return text, samples(text)


def test_parses_as_openmetrics_and_as_prometheus_text(failing):
    text, found = failing
    assert text.endswith("# EOF\n")
    strict = {f.name for f in parse_openmetrics(text)}
    loose = {f.name for f in parse_prometheus(text)}
    assert strict == loose
    assert {"kho_inspect_rule_status", "kho_inspect_scratch_bytes",
            "kho_inspect_preserved_bytes", "kho_inspect_gigantic_pages"} <= strict


def test_one_gauge_per_rule_and_status(failing):
    _, found = failing
    rules = {dict(labels)["rule"] for (name, labels) in found
             if name == "kho_inspect_rule_status"}
    assert len(rules) == len(checks().results)
    for rule in rules:
        assert sum(value(found, "rule_status", rule=rule, status=s) for s in STATUSES) == 1
    assert value(found, "rule_status", rule="hugetlb-boot-outside-scratch", status="fail") == 1
    assert value(found, "rule_status", rule="boot-allocations-in-scratch", status="skip") == 1
    assert value(found, "rule_evidence", rule="hugetlb-boot-outside-scratch") == 1
    assert value(found, "rules", status="fail") == 1
    assert value(found, "check_failed") == 1


def test_scratch_cost_per_node_and_preserved_bytes(failing):
    _, found = failing
    snap = guest()
    assert snap.scratch is not None and snap.preserved_out is not None
    node = snap.scratch.nodes[0]
    assert value(found, "scratch_bytes", node=node.node, **{"class": "original"}) == \
        node.original
    assert value(found, "scratch_bytes", node="total", **{"class": "extended"}) == \
        snap.scratch.total.extended
    assert value(found, "scratch_ram_bytes", node="total") == snap.scratch.total.ram
    assert value(found, "preserved_bytes", direction="out") == \
        snap.preserved_out.totals()["bytes"]
    assert value(found, "preserved_blocks", direction="out", order=12) == 1
    assert value(found, "radix_tree_bytes") == 2 * 4096
    assert value(found, "gigantic_pages", origin="boot", state="free", node=0) == 2
    assert value(found, "kexec_count") == 1 and value(found, "kho_boot") == 1


def test_multi_node_host():
    found = samples(openmetrics(checks(), host()))
    for node in range(4):
        assert value(found, "scratch_ram_bytes", node=node) > 1 << 39
        assert value(found, "gigantic_pages", origin="boot", state="free", node=node) == 200
    assert value(found, "check_failed") == 0


def test_missing_sections_are_left_out_not_zero():
    snap = replace(guest(), scratch=None, hugetlb=None, preserved_in=None,
                   missing={"scratch": "KHO is not active on this kernel"})
    found = samples(openmetrics(checks(), snap))
    names = {name for name, _ in found}
    assert "kho_inspect_scratch_bytes" not in names
    assert "kho_inspect_gigantic_pages" not in names
    assert ("kho_inspect_preserved_bytes", (("direction", "in"),)) not in found


def test_label_values_are_escaped():
    snap = replace(guest(), release='7.3 "lab"\\n')
    text = openmetrics(checks(), snap)
    info = [s for f in parse_openmetrics(text) if f.name == "kho_inspect_info"
            for s in f.samples]
    assert info[0].labels["release"] == '7.3 "lab"\\n'

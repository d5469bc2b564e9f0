# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Metrics
-------

The ``kho_inspect.views.metrics`` module writes a check run as metrics in the
OpenMetrics text format, which is also valid Prometheus text exposition
format: ready for node_exporter's textfile collector (write it to
``/var/lib/node_exporter/textfile_collector/kho.prom``) on hosts that kexec
by the thousand and are watched by alerts, not read by people.

Every metric is a gauge (a check run is a snapshot, not a counter):

* ``kho_inspect_rule_status{rule, status}``: 1 for the status the rule had,
  0 for the other two, so ``kho_inspect_rule_status{status="fail"} == 1``
  alerts on any failed rule; ``kho_inspect_rule_evidence{rule}`` counts the
  offending objects; ``kho_inspect_rules{status}`` and
  ``kho_inspect_check_failed`` summarise;
* ``kho_inspect_info{release, previous, generation, kho, arch}`` (always 1),
  ``kho_inspect_kho_active``, ``kho_inspect_kho_boot``,
  ``kho_inspect_kexec_count``;
* what scratch costs per node (``node="total"`` for all memory):
  ``kho_inspect_scratch_bytes{node, class}`` (original, extended,
  unpreserved), ``kho_inspect_scratch_ram_bytes{node}``,
  ``kho_inspect_scratch_share_ratio{node}``, ``kho_inspect_scratch_free_bytes{node}``;
* preserved memory: ``kho_inspect_preserved_bytes{direction}``,
  ``kho_inspect_preserved_ranges{direction}``,
  ``kho_inspect_preserved_blocks{direction, order}``,
  ``kho_inspect_radix_tree_bytes``;
* ``kho_inspect_gigantic_pages{origin, state, node}``.

A metric whose input the snapshot lacks is left out rather than written as 0.
Pure: a :class:`~kho_inspect.model.check.CheckReport` and a
:class:`~kho_inspect.model.snapshot.Snapshot` in, text out.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Optional, Tuple, Union

from kho_inspect.model.check import STATUSES, CheckReport
from kho_inspect.model.scratch import CLASSES, NodeUse
from kho_inspect.model.snapshot import Snapshot

__all__ = ("CONTENT_TYPE", "PREFIX", "openmetrics")

PREFIX = "kho_inspect"
CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Number = Union[int, float]
Labels = Tuple[Tuple[str, str], ...]


@dataclass
class _Gauge:
    name: str
    help: str
    unit: str = ""
    samples: List[Tuple[Labels, Number]] = field(default_factory=list)

    def add(self, value: Optional[Number], **labels: object) -> None:
        if value is not None:
            self.samples.append((tuple((k, _label(v)) for k, v in labels.items()), value))

    def lines(self) -> List[str]:
        name = f"{PREFIX}_{self.name}"
        out = [f"# TYPE {name} gauge", f"# HELP {name} {self.help}"]
        if self.unit:
            out.append(f"# UNIT {name} {self.unit}")
        for labels, value in self.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            out.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
        return out


def _label(value: object) -> str:
    return "none" if value is None else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _number(value: Number) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _rules(report: CheckReport) -> List[_Gauge]:
    status = _Gauge("rule_status", "Result of each placement rule: 1 for its status, 0 for "
                    "the others.")
    evidence = _Gauge("rule_evidence", "Offending objects each rule found.")
    for result in report.results:
        for s in STATUSES:
            status.add(int(result.status == s), rule=result.id, status=s)
        evidence.add(len(result.evidence), rule=result.id)
    counts = _Gauge("rules", "Rules by status.")
    for s in STATUSES:
        counts.add(len(report.by_status(s)), status=s)
    failed = _Gauge("check_failed", "1 when a rule failed (kho-inspect check exits 1).")
    failed.add(int(report.failed))
    return [status, evidence, counts, failed]


def _kernel(report: CheckReport, snap: Snapshot) -> List[_Gauge]:
    act = snap.activation
    info = _Gauge("info", "The kernel checked and its KHO state, as labels; always 1.")
    info.add(1, release=snap.release or "unknown", previous=report.previous or "none",
             generation=snap.generation, kho="unknown" if act is None else act.state,
             arch=snap.arch or "unknown")
    active = _Gauge("kho_active", "1 when Kexec HandOver is active on this kernel.")
    active.add(None if act is None else int(act.active))
    boot = _Gauge("kho_boot", "1 when this kernel was booted through KHO.")
    boot.add(None if snap.kho_boot is None else int(snap.kho_boot))
    count = _Gauge("kexec_count", "Kexecs that led to this kernel (kexec-metadata).")
    count.add(None if snap.status is None else snap.status.kexec_count)
    return [info, active, boot, count]


def _node_label(use: NodeUse, total: bool) -> str:
    return "total" if total else _label(use.node)


def _scratch(snap: Snapshot) -> List[_Gauge]:
    if snap.scratch is None:
        return []
    size = _Gauge("scratch_bytes", "Scratch memory by node and class.", "bytes")
    ram = _Gauge("scratch_ram_bytes", "Memory (memblock.memory) by node.", "bytes")
    share = _Gauge("scratch_share_ratio", "Original scratch as a fraction of the node's memory.",
                   "ratio")
    free = _Gauge("scratch_free_bytes", "Original scratch still free (MIGRATE_CMA free lists).",
                  "bytes")
    rows = [(n, False) for n in snap.scratch.nodes] + [(snap.scratch.total, True)]
    for use, total in rows:
        node = _node_label(use, total)
        for name in CLASSES:
            size.add(getattr(use, name), node=node, **{"class": name})
        ram.add(use.ram, node=node)
        share.add(use.share, node=node)
        free.add(use.free, node=node)
    return [size, ram, share, free]


def _preserved(snap: Snapshot) -> List[_Gauge]:
    size = _Gauge("preserved_bytes", "Preserved memory: out (this kernel hands over), in "
                  "(received from the previous kernel).", "bytes")
    ranges = _Gauge("preserved_ranges", "Preserved ranges by direction.")
    blocks = _Gauge("preserved_blocks", "Preserved blocks by direction and order.")
    tree = _Gauge("radix_tree_bytes", "Pages of the outgoing radix tree itself.", "bytes")
    for direction in ("out", "in"):
        report = getattr(snap, f"preserved_{direction}")
        if report is None:
            continue
        totals = report.totals()
        size.add(totals["bytes"], direction=direction)
        ranges.add(totals["ranges"], direction=direction)
        for order, n in sorted(report.histogram.items()):
            blocks.add(n, direction=direction, order=order)
        if direction == "out":
            tree.add(totals["tree_bytes"])
    return [size, ranges, blocks, tree]


def _hugetlb(snap: Snapshot) -> List[_Gauge]:
    if snap.hugetlb is None:
        return []
    pages = _Gauge("gigantic_pages", "Gigantic hugetlb pages by origin, state and node.")
    counts: Mapping[Tuple[str, str, str], int] = Counter(
        (p.origin, p.state, _label(p.node)) for p in snap.hugetlb.pages)
    for (origin, state, node), n in sorted(counts.items()):
        pages.add(n, origin=origin, state=state, node=node)
    return [pages]


def _text(gauges: Iterable[_Gauge]) -> str:
    lines: List[str] = []
    for gauge in gauges:
        if gauge.samples:
            lines += gauge.lines()
    return "\n".join(lines + ["# EOF"]) + "\n"


def openmetrics(report: CheckReport, snapshot: Snapshot) -> str:
    """The check run ``report`` on ``snapshot`` as OpenMetrics text (ends with ``# EOF``)."""
    gauges: List[_Gauge] = [*_rules(report), *_kernel(report, snapshot), *_scratch(snapshot),
                            *_preserved(snapshot), *_hugetlb(snapshot)]
    return _text(gauges)


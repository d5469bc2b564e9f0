# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Check view
----------

Sections of ``kho-inspect check``: one row per rule with its result and what
was checked (or why it was skipped), then one section per failed rule with
its statement, the kernel code that guarantees it and a table of the
evidence (each offending range with its owner, scratch class and memblock
flags). :func:`catalogue_sections` is the view of ``check --list``.
"""

from typing import Any, List, Sequence

from kho_inspect.model.check import CheckReport, Evidence, RuleInfo, RuleResult
from kho_inspect.render import Section, human_size

__all__ = ("catalogue_sections", "evidence_rows", "sections", "verdict")

STATUS_WORDS = {"pass": "pass", "fail": "FAIL", "skip": "skip"}
EVIDENCE_HEADERS = ("start", "end", "size", "owner", "class", "flags", "what")


def _summary(report: CheckReport) -> Section:
    rows = [(r.id, STATUS_WORDS[r.status], r.reason or "-") for r in report.results]
    s = report.summary()
    about = f"kernel {report.release or '?'}"
    if report.previous:
        about += f", kexec'd from {report.previous} (--previous)"
    if report.generation:
        about += f", {report.generation} scratch flags"
    notes = [f"{about}.",
             f"{s['pass']} passed, {s['fail']} failed, {s['skip']} skipped of {s['total']} "
             f"rules; exit status {report.exit_status}."]
    return Section("Rules", ("rule", "result", "checked / why skipped"), rows, notes)


def _value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    return f"{value:#x}" if value >= 1 << 16 else str(value)


def evidence_rows(evidence: Sequence[Evidence]) -> List[Sequence[str]]:
    """One row per offending object: range, owner, class, flags and the sentence."""
    rows = []
    for e in evidence:
        what = e.what
        if e.expected is not None or e.found is not None:
            what += f" (expected {_value(e.expected)}, found {_value(e.found)})"
        if e.range is not None:
            start, end, size = f"{e.range.base:#x}", f"{e.range.last:#x}", human_size(e.range.size)
        else:
            start = end = size = "-"
        rows.append((start, end, size, e.owner or "-", e.klass or "-",
                     "|".join(e.flags) or "-", what))
    return rows


def _failure(result: RuleResult) -> Section:
    notes = [result.info.statement, f"Guaranteed by {result.info.guarantee}.",
             f"See {result.info.docs}."]
    lines = [line for e in result.evidence for line in e.lines]
    return Section(f"FAIL {result.id}", EVIDENCE_HEADERS, evidence_rows(result.evidence),
                   notes, block=lines)


def sections(report: CheckReport) -> List[Section]:
    """The text/Markdown view of a check run."""
    return [_summary(report)] + [_failure(r) for r in report.by_status("fail")]


def verdict(report: CheckReport, details: str = "--format json / --output FILE") -> Section:
    """The last lines of ``check``'s text output (read first): the counts, the
    failed rules and where the details are."""
    s = report.summary()
    line = f"{s['pass']} passed, {s['fail']} failed, {s['skip']} skipped"
    if s["failed"]:
        line += "; failed: " + ", ".join(s["failed"])
    return Section("Verdict", notes=[f"{line}; details: {details}."])


def catalogue_sections(infos: Sequence[RuleInfo]) -> List[Section]:
    """The view of ``check --list``: every rule, then the code behind each."""
    rules = Section("Rules", ("rule", "statement", "applies to", "needs"),
                    [(i.id, i.statement, i.applies, ", ".join(i.needs) or "-") for i in infos],
                    [f"{len(infos)} rules; each is explained in {infos[0].docs.split('#')[0]}."
                     if infos else "No rules."])
    guarantees = Section("Kernel code that guarantees each rule (Linux 7.3)",
                         ("rule", "guarantee"), [(i.id, i.guarantee) for i in infos])
    return [rules, guarantees]

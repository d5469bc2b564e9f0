# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Report Markdown
---------------

The ``kho_inspect.report.markdown`` module writes ``report.md``: one chapter
(``##``) per subject, each made of the same
:class:`~kho_inspect.render.Section` tables the commands print (``check``,
``kho scratch``, ``diff``) or of the summaries in
:mod:`kho_inspect.report.summary`, rendered with
:func:`kho_inspect.render.emit`.
"""

import io
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from kho_inspect.diff import SnapshotDiff
from kho_inspect.render import Section, emit, human_size
from kho_inspect.report.inputs import ReportInputs
from kho_inspect.report.summary import (
    bootlog_summary,
    hugetlb_summary,
    kernel_summary,
    memblock_summary,
    preserved_summary,
)
from kho_inspect.views import check as check_view
from kho_inspect.views import diff as diff_view
from kho_inspect.views import scratch as scratch_view

__all__ = ("markdown",)

Chapter = Tuple[str, List[Section]]


def _yes_no(value: Optional[bool], yes: str, no: str) -> str:
    return "unknown" if value is None else yes if value else no


def _kernel(inputs: ReportInputs) -> Chapter:
    k = kernel_summary(inputs.snapshot)
    kho = k["kho"]
    rows: List[Sequence[Any]] = [
        ("release", k["release"] or "unknown"),
        ("architecture", k["arch"] or "unknown"),
        ("command line", f"`{k['command_line']}`" if k["command_line"] else "unknown"),
        ("read from", k["taken_from"] or "unknown"),
        ("KHO", "unknown" if kho is None else f"{kho['state']}: {kho['reason']}"),
        ("boot", _yes_no(k["kho_boot"], "through KHO (kexec handover)", "cold boot")),
        ("kexec count", "-" if k["kexec_count"] is None else k["kexec_count"]),
        ("previous kernel", k["previous_release"] or "-"),
        ("KHO ABI", k["compatible"] or "-"),
        ("scratch flags", k["generation"]),
        ("memory nodes", ", ".join(map(str, k["memory_nodes"])) or "-"),
    ]
    return "Kernel", [Section("Kernel", ("item", "value"), rows)]


def _checks(inputs: ReportInputs) -> Chapter:
    if inputs.checks is None:
        return "Checks", [Section("Checks", notes=["The rules were not run."])]
    return "Checks", check_view.sections(inputs.checks)


def _memblock(inputs: ReportInputs) -> Chapter:
    summary = memblock_summary(inputs.snapshot)
    if not summary["available"]:
        return "memblock", [Section("Regions by flag", notes=[summary["missing"]])]
    rows = [(name, row["flag"], row["regions"], human_size(row["bytes"]), f"{row['bytes']:#x}")
            for name, table in summary["types"].items() for row in table]
    notes = ["A region with several flags counts under each of them; flag names are the "
             "kernel's enum memblock_flags names."]
    return "memblock", [Section("Regions by flag", ("type", "flag", "regions", "size", "bytes"),
                                rows, notes)]


def _scratch(inputs: ReportInputs) -> Chapter:
    report = inputs.snapshot.scratch
    if report is None:
        why = inputs.snapshot.why_missing("scratch")
        return "KHO scratch", [Section("Scratch", notes=[why])]
    return "KHO scratch", scratch_view.sections(report)


def _orders(title: str, summary: Optional[Mapping[str, Any]], missing: Optional[str]) -> Section:
    if summary is None:
        return Section(title, notes=[missing or "not available"])
    rows = [(order, counts["blocks"], human_size(counts["bytes"]))
            for order, counts in sorted(summary["by_order"].items(), key=lambda kv: int(kv[0]))]
    blocks = "-" if summary["blocks"] is None else summary["blocks"]
    notes = [f"{human_size(summary['bytes'])} in {summary['ranges']} ranges and {blocks} blocks "
             f"(source: {summary['source']})."]
    if summary["tree_pages"]:
        notes.append(f"The radix tree itself takes {summary['tree_pages']} pages "
                     f"({human_size(summary['tree_bytes'])}).")
    return Section(title, ("order", "blocks", "bytes"), rows, notes)


def _preserved(inputs: ReportInputs) -> Chapter:
    summary = preserved_summary(inputs.snapshot)
    missing = summary["missing"]
    return "Preserved memory", [
        _orders("Preserved by this kernel for the next one (out)", summary["out"],
                missing.get("out")),
        _orders("Received from the previous kernel (in)", summary["in"], missing.get("in")),
    ]


def _hugetlb(inputs: ReportInputs) -> Chapter:
    summary = hugetlb_summary(inputs.snapshot)
    if not summary["available"]:
        return "Gigantic pages", [Section("Gigantic pages", notes=[summary["missing"]])]
    rows = [(f"{p['phys']:#x}", f"{p['phys'] + p['size'] - 1:#x}", human_size(p["size"]),
             "-" if p["node"] is None else p["node"], p["origin"], p["state"], p["class"] or "-")
            for p in summary["pages"]]
    notes = [", ".join(f"{c['pages']} {c['origin']} {c['state']}" for c in summary["counts"])
             + "." if summary["counts"] else "No gigantic pages."]
    out = [Section("Gigantic pages", ("start", "end", "size", "node", "origin", "state",
                                      "class"), rows, notes)]
    if summary["cma_areas"]:
        out.append(Section("hugetlb CMA areas", ("start", "end", "size", "node"), [
            (f"{a['base']:#x}", f"{a['base'] + a['size'] - 1:#x}", human_size(a["size"]),
             "-" if a["node"] is None else a["node"]) for a in summary["cma_areas"]]))
    return "Gigantic pages", out


def _bootlog(inputs: ReportInputs) -> Optional[Chapter]:
    summary = bootlog_summary(inputs.bootlog, inputs.snapshot)
    if summary is None:
        return None
    window = summary["window"]
    notes = [f"{summary['lines']} lines ({inputs.sources.get('bootlog', 'the boot log')}), "
             f"{summary['allocations']} memblock allocations and reservations, "
             f"{summary['unpaired']} request(s) without a reservation."]
    if window is None:
        notes.append("No scratch-only window: the log is of a cold boot.")
    else:
        closed = "" if window["closed"] else " (the log stops inside it)"
        notes.append(f"Scratch-only window: lines {window['start_line']}-{window['end_line']}"
                     f"{closed}; {summary['in_window']} allocations "
                     f"({human_size(summary['in_window_bytes'])}) inside it.")
    if summary["truncated"]:
        notes.append("The log does not start at boot: early lines were lost.")
    by_class = Section("Allocations in the scratch-only window by class", ("class", "allocations"),
                       list(summary["by_class"].items()), notes)
    callers = Section("Top callers in the window", ("caller", "allocations", "bytes"),
                      [(c["caller"], c["allocations"], human_size(c["bytes"]))
                       for c in summary["top_callers"]])
    return "Boot log", [by_class, callers]


def _trace(inputs: ReportInputs) -> Optional[Chapter]:
    trace = inputs.trace
    if trace is None:
        return None
    notes = [f"{trace['events']} events in {inputs.sources.get('trace', 'the trace file')}. "
             f"The trace format is {trace['format']}."]
    return "Trace", [Section("Events by kind", ("kind", "events"),
                             [(k["kind"], k["events"]) for k in trace["by_kind"]], notes)]


def _diff(diff: Optional[SnapshotDiff], inputs: ReportInputs) -> Optional[Chapter]:
    if diff is None:
        return None
    title = f"Changes since the previous kernel ({inputs.sources.get('previous', '--previous')})"
    return title, diff_view.sections(diff)


def _missing(inputs: ReportInputs) -> Optional[Chapter]:
    snap = inputs.snapshot
    rows = [(name, why) for name, why in sorted(snap.missing.items())]
    rows += [(name, f"corrupt: {why}") for name, why in sorted(snap.corrupt.items())]
    notes = list(snap.notes)
    if not rows and not notes:
        return None
    return "Not available", [Section("Sections the snapshot lacks", ("section", "why"), rows,
                                     notes)]


def _render(title: str, sections: Sequence[Section]) -> str:
    """A chapter: ``## title`` and its sections; a lone section of the same
    title becomes the chapter heading itself."""
    out = io.StringIO()
    emit("markdown", None, lambda: sections, out)
    text = out.getvalue()
    if len(sections) == 1 and sections[0].title == title and text.startswith("### "):
        return "## " + text[len("### "):]
    return f"## {title}\n\n{text}"


def _intro(inputs: ReportInputs, map_file: str, redacted: bool) -> List[str]:
    snap = inputs.snapshot
    release = snap.release or "unknown kernel"
    lines = [f"# kho-inspect report: {release}", ""]
    origin = f" from {snap.taken_from}" if snap.taken_from else ""
    source = inputs.sources.get("snapshot")
    lines.append(f"Kernel {release} ({snap.arch or 'unknown architecture'}), read{origin}"
                 + (f" (snapshot {source})" if source else "") + f" by {inputs.tool}. "
                 + ("Kernel virtual addresses are redacted (shown as `<kva-N>`; "
                    "`--no-redact` keeps them); physical addresses are shown as they are."
                    if redacted else "Kernel virtual addresses are NOT redacted."))
    lines.append("")
    if inputs.checks is not None:
        s = inputs.checks.summary()
        verdict = (f"**{s['fail']} FAILED**: {', '.join(s['failed'])}" if s["fail"]
                   else "**all rules that ran pass**")
        lines += [f"Checks: {verdict} ({s['pass']} passed, {s['fail']} failed, {s['skip']} "
                  f"skipped of {s['total']}).", ""]
    lines += [f"![Physical memory map]({map_file})" if map_file.endswith(".svg")
              else f"(The memory map was not drawn: {map_file}.)", ""]
    return lines


def markdown(inputs: ReportInputs, diff: Optional[SnapshotDiff], map_file: str,
             redacted: bool) -> str:
    """The text of ``report.md`` (before redaction).

    :param map_file: the memory map's file name, linked from the top (or,
        when it was not drawn, why).
    """
    chapters = [_kernel(inputs), _checks(inputs), _memblock(inputs), _scratch(inputs),
                _preserved(inputs), _hugetlb(inputs), _bootlog(inputs), _trace(inputs),
                _diff(diff, inputs), _missing(inputs)]
    lines = _intro(inputs, map_file, redacted)
    for chapter in chapters:
        if chapter is None:
            continue
        title, sections = chapter
        lines += [_render(title, sections)]
    return "\n".join(lines).rstrip() + "\n"

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Trace view
----------

What ``kho-inspect trace`` prints: one line per event while it runs
(:func:`event_line`, bcc-tool style), and at the end a one-screen summary
(:func:`sections`): each probe with how it attached or why not and its event
count, the events per kind and per region class, the violations, the lost
events, and where the details went.
"""

from collections import Counter
from typing import Dict, List, Optional, Sequence

from kho_inspect.checks.trace import counts
from kho_inspect.model.trace import LOST_KINDS, TraceEvent, TraceFinding, TraceRun
from kho_inspect.render import Section, human_size

__all__ = ("EVENT_HEADER", "event_line", "finding_line", "sections")

EVENT_HEADER = (f"{'TIME(s)':>9} {'COMM':<15} {'PID':>7} {'PROBE':<40} {'START':>14} "
                f"{'SIZE':>9} {'RESULT':<7} CLASS")

MAX_VIOLATIONS = 10
"""Violations listed in the summary; the rest are counted (all are in the JSON)."""


def event_line(e: TraceEvent, t0_ns: int) -> str:
    """One event, for the running output."""
    start = "-" if e.phys is None else f"{e.phys:#x}"
    size = "-" if e.phys is None else human_size(e.size)
    result = "-" if e.ok is None else "ok" if e.ok else _failure(e)
    probe = e.probe if not e.api or e.api == e.probe else f"{e.probe}<{e.api}"
    return (f"{(e.ts_ns - t0_ns) / 1e9:9.3f} {e.comm[:15]:<15} {e.pid:>7} {probe[:40]:<40} "
            f"{start:>14} {size:>9} {result:<7} {e.klass}")


def _failure(e: TraceEvent) -> str:
    if e.ret is None:
        return "failed"
    return "NULL" if e.ret == 0 else f"err {e.ret}"  # a pointer, or an int error


def finding_line(f: TraceFinding) -> str:
    return f"VIOLATION {f.rule}: {f.message}"


def _probes(run: TraceRun, c: Dict[str, Counter]) -> Section:
    per_probe = c["probe"]
    rows = [(p.name, p.group, p.how or "not attached", p.hits if p.attached else "-",
             per_probe.get(p.name, 0) if p.attached else "-", p.reason or "")
            for p in run.probes]
    return Section("Probes", ("probe", "group", "attached", "hits", "events", "note"), rows)


def _classes(c: Dict[str, Counter]) -> Section:
    rows = [(kind, n) for kind, n in sorted(c["kind"].items())]
    klass = ", ".join(f"{k} {n}" for k, n in sorted(c["class"].items())) or "none"
    return Section("Events per kind", ("kind", "events"), rows,
                   notes=[f"Ranges per class: {klass}."])


def _lost(run: TraceRun) -> str:
    lost = run.lost
    parts = [f"{k.replace('_', ' ')} {getattr(lost, k)}" for k in LOST_KINDS
             if getattr(lost, k)]
    if not parts:
        return "Lost events: none."
    return f"Lost events: {lost.total} ({', '.join(parts)})."


def sections(run: TraceRun, output: Optional[str] = None) -> List[Section]:
    """The end-of-trace summary.

    :param output: where the JSON details were saved (``-o FILE``), if anywhere.
    """
    c = counts(run.events)
    out = [_probes(run, c), _classes(c)]
    found: Sequence[TraceFinding] = run.findings
    if found:
        rows = [(f.rule, f.seq, f.message) for f in found[:MAX_VIOLATIONS]]
        notes = [f"... and {len(found) - MAX_VIOLATIONS} more."] \
            if len(found) > MAX_VIOLATIONS else []
        out.append(Section(f"Violations ({len(found)})", ("rule", "event", "what"), rows,
                           notes=notes))
    attached = len(run.attached())
    verdict = [
        f"{len(run.events)} events from {attached} of {len(run.probes)} probes in "
        f"{run.seconds:.1f} s through a {'ring' if run.buffer == 'ringbuf' else 'perf'} "
        f"buffer; {len(found)} violations.",
        _lost(run),
    ]
    if run.command:
        verdict.append(f"Command {' '.join(run.command)!r} exited {run.command_exit}.")
    verdict += list(run.notes)
    verdict.append(f"Details: {output} (kho-inspect/trace JSON)." if output
                   else "Details: --format json or -o FILE.")
    out.append(Section("Summary", notes=verdict))
    return out

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Boot log view
-------------

What ``kho-inspect bootlog`` prints about a boot log parsed by
:func:`kho_inspect.bootlog.parse_bootlog`: the scratch-only window, the
memblock allocations (those made inside the window by default, every one
with ``--all``) with their flags and the region class each lies in, and how
many of each class there are. :func:`allocation_classes` names the classes a
snapshot gives for :func:`kho_inspect.bootlog.classify_allocations`.
"""

from collections import Counter
from typing import Any, Dict, List, Sequence, Tuple

from kho_inspect.model.bootlog import BootAllocation, BootLog
from kho_inspect.model.scratch import first_mib_scratch
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.ranges import RangeSet
from kho_inspect.render import Section, human_size

__all__ = ("CLASS_SECTIONS", "allocation_classes", "allocation_json", "json_object", "sections")

# The snapshot sections allocation_classes() reads (read_snapshot(sections=...)).
CLASS_SECTIONS = ("status", "memblock", "activation", "scratch", "preserved_in")


def allocation_classes(snapshot: Snapshot) -> List[Tuple[str, RangeSet]]:
    """``(class, ranges)`` in priority order: original scratch, extended and
    unpreserved scratch (where memblock is kept), on x86 the first MiB (scratch
    until ``reserve_real_mode()``, :data:`~kho_inspect.model.scratch.X86_FIRST_MIB`),
    and the memory the previous kernel preserved (as this kernel sees it).
    Empty classes are left out."""
    out: List[Tuple[str, RangeSet]] = []
    if snapshot.scratch is not None:
        c = snapshot.scratch.classes
        out.append(("original", c.original))
        if snapshot.memblock is not None:
            out += [("extended", c.extended), ("unpreserved", c.unpreserved)]
        out.append(("first-mib", first_mib_scratch(snapshot.arch)))
    if snapshot.preserved_in is not None:
        out.append(("preserved", snapshot.preserved_in.range_set()))
    return [(name, ranges) for name, ranges in out if ranges]


def allocation_json(a: BootAllocation) -> Dict[str, Any]:
    return {
        "phys": a.phys, "size": a.size, "caller": a.caller, "flags": list(a.flags),
        "in_window": a.in_window, "class": a.klass, "request": a.request,
        "flags_value": a.flags_value, "nid": a.nid, "line": a.line,
    }


def json_object(log: BootLog, classes: Sequence[Tuple[str, RangeSet]],
                notes: Sequence[str]) -> Dict[str, Any]:
    """``{"window", "allocations", "unpaired", "lines", "truncated", "classes", "notes"}``."""
    window = None if log.window is None else {
        "start_line": log.window.start_line, "end_line": log.window.end_line,
        "closed": log.window.closed}
    return {
        "window": window,
        "allocations": [allocation_json(a) for a in log.allocations],
        "unpaired": list(log.unpaired),
        "lines": log.lines,
        "truncated": log.truncated,
        "classes": {name: ranges.to_json() for name, ranges in classes},
        "notes": list(notes),
    }


def _window(log: BootLog) -> Section:
    if log.window is None:
        return Section("Scratch-only window", notes=[
            "None: the log has no 'KHO: found kexec handover data.' line (a cold boot, or a "
            "log that does not reach back to boot)."])
    w = log.window
    end = f"line {w.end_line}" if w.closed else f"the end of the log (line {w.end_line})"
    inside = [a for a in log.allocations if a.in_window and a.is_allocation]
    return Section("Scratch-only window", notes=[
        f"From line {w.start_line} ('KHO: found kexec handover data.') to {end}: "
        f"{len(inside)} memblock allocations, {human_size(sum(a.size for a in inside))}."])


def _rows(allocations: Sequence[BootAllocation]) -> List[Sequence[Any]]:
    return [(a.line, f"{a.phys:#x}", f"{a.phys + a.size - 1:#x}", human_size(a.size), a.caller,
             a.request, "|".join(a.flags) or "-", "yes" if a.in_window else "", a.klass)
            for a in allocations]


def sections(log: BootLog, notes: Sequence[str], every: bool = False) -> List[Section]:
    """The text/Markdown view: the window, the allocations, a count per class.

    :param every: list every allocation and reservation, not only those made
        inside the scratch-only window.
    """
    shown = list(log.allocations) if every else [
        a for a in log.allocations if a.in_window and a.is_allocation]
    title = "memblock allocations and reservations" if every else (
        "memblock allocations in the scratch-only window")
    table = Section(title, ("line", "start", "end", "size", "caller", "request", "flags",
                            "window", "class"), _rows(shown))
    counts = Counter((a.klass, a.in_window) for a in log.allocations)
    per_class = [(klass, n, "yes" if window else "no")
                 for (klass, window), n in sorted(counts.items())]
    out = [_window(log), table,
           Section("Allocations per class", ("class", "count", "in window"), per_class)]
    extra = list(notes)
    if log.unpaired:
        extra.append(f"{len(log.unpaired)} request lines had no reservation line after them "
                     f"(failed allocations, or lost lines); the first: {log.unpaired[0]}")
    if log.truncated:
        extra.append("The log does not start at boot (no 'Linux version' line near its top): "
                     "early lines were lost (boot with log_buf_len=).")
    if extra:
        out.append(Section("Notes", notes=extra))
    return out

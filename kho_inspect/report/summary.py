# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Report summaries
----------------

The ``kho_inspect.report.summary`` module computes the summaries a report
shows, once, as plain JSON-able dicts: ``report.json`` stores them and
``report.md`` renders them. Each takes model objects and returns a dict
(``None`` where its input is missing); nothing here formats text.

* :func:`kernel_summary`: release, command line, KHO state, boot kind, kexec count;
* :func:`memblock_summary`: regions and bytes per memblock type and flag;
* :func:`scratch_summary`: the areas, the classes and what scratch costs per node;
* :func:`preserved_summary`: preserved memory by order;
* :func:`hugetlb_summary`: gigantic pages with the scratch class each lies in;
* :func:`bootlog_summary`: the ``memblock=debug`` allocations by class and caller;
* :func:`trace_summary`: the events of a trace file by kind.
"""

from collections import Counter
from typing import Any, Dict, Mapping, Optional, Tuple

from kho_inspect.bootlog import classify_allocations, classify_range
from kho_inspect.errors import InputError
from kho_inspect.model.bootlog import BootLog
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.scratch import CLASSES
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.ranges import Range
from kho_inspect.views.bootlog import allocation_classes

__all__ = (
    "TRACE_KEYS",
    "bootlog_summary",
    "hugetlb_summary",
    "kernel_summary",
    "memblock_summary",
    "preserved_summary",
    "scratch_summary",
    "trace_summary",
)

JsonDict = Dict[str, Any]

TRACE_KEYS = ("event", "type", "name", "probe")
"""Keys naming an event's kind, first found wins (the trace format is not settled)."""

TOP_CALLERS = 10


def kernel_summary(snap: Snapshot) -> JsonDict:
    """Who the kernel is and whether KHO works on it."""
    status, act = snap.status, snap.activation
    return {
        "release": snap.release,
        "arch": snap.arch,
        "command_line": snap.command_line,
        "taken_from": snap.taken_from,
        "generation": snap.generation,
        "kho": None if act is None else {"state": act.state, "reason": act.reason,
                                         "requested_by": act.requested_by, "luo": act.luo},
        "kho_boot": snap.kho_boot,
        "kexec_count": None if status is None else status.kexec_count,
        "previous_release": None if status is None else status.previous_release,
        "compatible": None if status is None else status.compatible,
        "memory_nodes": list(snap.memory_nodes),
    }


def _missing(snap: Snapshot, section: str) -> JsonDict:
    return {"available": False, "missing": snap.why_missing(section)}


def memblock_summary(snap: Snapshot) -> JsonDict:
    """``{"available", "types": {type: [{"flag", "regions", "bytes"}]}}``, flags
    in enumerator order (``NONE`` first, ``all`` last)."""
    state = snap.memblock
    if state is None:
        return _missing(snap, "memblock")

    def order(name: str) -> Tuple[int, str]:
        if name == "NONE":
            return (-1, name)
        if state.flags.has(name):
            return (state.flags.value(name), name)
        return (int(name, 16) if name.startswith("0x") else 1 << 62, name)

    types: JsonDict = {}
    for name, mtype in state.types.items():
        totals = mtype.totals()
        rows = [{"flag": flag, "regions": totals[flag][0], "bytes": totals[flag][1]}
                for flag in sorted((f for f in totals if f != "all"), key=order)]
        rows.append({"flag": "all", "regions": totals["all"][0], "bytes": totals["all"][1]})
        types[name] = rows
    return {"available": True, "types": types}


def scratch_summary(snap: Snapshot) -> JsonDict:
    """The areas, the bytes of each class and the cost per node."""
    report = snap.scratch
    if report is None:
        return _missing(snap, "scratch")
    classes = report.classes
    return {
        "available": True,
        "flags": {"scratch": classes.scratch_flag, "unpreserved": classes.unpreserved_flag},
        "extended_rule": classes.extended_rule,
        "areas": [a.to_json() for a in report.areas],
        "classes": {name: {"ranges": len(classes.get(name)), "bytes": classes.get(name).total}
                    for name in CLASSES},
        "nodes": [n.to_json() for n in report.nodes],
        "total": report.total.to_json(),
        "notes": list(report.notes),
    }


def _preserved(report: Optional[PreservedReport]) -> Optional[JsonDict]:
    if report is None:
        return None
    totals = report.totals()
    return {"source": report.source, "kernel": report.kernel, "ranges": totals["ranges"],
            "blocks": totals["blocks"], "bytes": totals["bytes"],
            "tree_pages": totals["tree_pages"], "tree_bytes": totals["tree_bytes"],
            "by_order": totals["by_order"]}


def preserved_summary(snap: Snapshot) -> JsonDict:
    """What this kernel preserves (``out``) and what it received (``in``), by order."""
    return {
        "out": _preserved(snap.preserved_out),
        "in": _preserved(snap.preserved_in),
        "missing": {d: snap.why_missing(f"preserved_{d}") for d in ("out", "in")
                    if getattr(snap, f"preserved_{d}") is None},
    }


def hugetlb_summary(snap: Snapshot) -> JsonDict:
    """Every gigantic page with the class it lies in, counts by origin and state,
    and the hugetlb CMA areas."""
    report = snap.hugetlb
    if report is None:
        return _missing(snap, "hugetlb")
    classes = allocation_classes(snap)
    pages = []
    for p in report.pages:
        rng = Range(p.phys, p.size)
        pages.append({"phys": p.phys, "size": p.size, "node": p.node, "origin": p.origin,
                      "state": p.state, "class": classify_range(rng, classes) if classes
                      else None})
    counts = Counter((p["origin"], p["state"]) for p in pages)
    return {
        "available": True,
        "pages": pages,
        "counts": [{"origin": o, "state": s, "pages": n} for (o, s), n in sorted(counts.items())],
        "cma_areas": [{"base": a.base, "size": a.size, "node": a.node}
                      for a in report.cma_areas],
    }


def bootlog_summary(log: Optional[BootLog], snap: Snapshot) -> Optional[JsonDict]:
    """The allocations of a ``memblock=debug`` log by class and by caller.

    Allocations are classified against this kernel's scratch classes and the
    memory the previous kernel preserved
    (:func:`~kho_inspect.views.bootlog.allocation_classes`).
    """
    if log is None:
        return None
    classes = allocation_classes(snap)
    if classes:
        log = classify_allocations(log, classes)
    window = log.in_window()
    callers = Counter(a.caller for a in window)
    return {
        "lines": log.lines,
        "truncated": log.truncated,
        "window": None if log.window is None else log.window.to_json(),
        "allocations": len(log.allocations),
        "in_window": len(window),
        "in_window_bytes": sum(a.size for a in window),
        "by_class": dict(sorted(Counter(a.klass for a in window).items())),
        "top_callers": [{"caller": c, "allocations": n, "bytes": sum(
            a.size for a in window if a.caller == c)} for c, n in callers.most_common(TOP_CALLERS)],
        "unpaired": len(log.unpaired),
    }


def _kind(event: Mapping[str, Any]) -> str:
    for key in TRACE_KEYS:
        if isinstance(event.get(key), str):
            return event[key]
    return "(no kind)"


def trace_summary(obj: Any, what: str = "the trace file") -> JsonDict:
    """Count the events of a trace file by kind.

    The trace format is preliminary: a JSON object with an ``events`` list of
    objects, each naming its kind in one of :data:`TRACE_KEYS`.

    :raises InputError: ``obj`` is not such an object.
    """
    events = obj.get("events") if isinstance(obj, Mapping) else None
    if not isinstance(events, list) or not all(isinstance(e, Mapping) for e in events):
        raise InputError(f"{what} is not a trace: it must be a JSON object with an \"events\" "
                         "list of objects.")
    kinds = Counter(_kind(e) for e in events)
    return {"events": len(events),
            "by_kind": [{"kind": k, "events": n} for k, n in sorted(
                kinds.items(), key=lambda kv: (-kv[1], kv[0]))],
            "format": "preliminary: {\"events\": [...]} counted by "
                      + "/".join(TRACE_KEYS)}


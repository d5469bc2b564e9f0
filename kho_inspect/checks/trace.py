# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Trace rules
-----------

The ``kho_inspect.checks.trace`` module judges the events of
``kho-inspect trace`` (:class:`~kho_inspect.model.trace.TraceEvent`): it
classifies each event's physical range against the current region map with
the boot log's classifier (:func:`kho_inspect.bootlog.classify_range`), and
flags the runtime events that the kernel must never produce on a KHO kernel
(docs/kernel/invariants.md):

``trace-preserve-outside-scratch``
    a key added to the outgoing radix tree (``kho_radix_add_key``, which every
    ``kho_preserve_*`` ends in) covers original scratch (``kho_scratch[]``).
    Scratch is where the next kernel allocates before it knows what is
    preserved; ``kho_preserve_folio()``/``kho_preserve_pages()`` refuse such
    memory under ``CONFIG_KEXEC_HANDOVER_DEBUG`` (``kho_scratch_overlap()``).
``trace-contig-outside-scratch``
    a runtime contiguous allocation (``alloc_contig_frozen_range_noprof``, a
    CMA or hugetlb CMA allocation) that succeeded covers original scratch.
    Scratch pageblocks are ``MIGRATE_CMA`` without being a CMA area, and
    range isolation treats them as unmovable outside CMA
    (``has_unmovable_pages()``, mm/page_isolation.c), so no runtime gigantic
    folio may land there.

Both are also rules of ``check`` (``check --trace FILE`` judges a saved trace
against the regions it was classified by, or this kernel's scratch areas).
Everything here is pure: events and ``(class, ranges)`` pairs in, classified
events and findings out.
"""

from collections import Counter
from dataclasses import replace
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from kho_inspect.bootlog import range_classifier
from kho_inspect.checks.context import Context
from kho_inspect.checks.registry import Outcome, Skip, rule
from kho_inspect.model.check import Evidence
from kho_inspect.model.trace import LOST_KINDS, TraceEvent, TraceFinding, TraceLost, TraceRun
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "RULE_PRESERVE",
    "RULE_CONTIG",
    "TRACE_RULES",
    "ALLOC_KINDS",
    "event_classifier",
    "classify_event",
    "classify_events",
    "event_findings",
    "findings",
    "lost_from_counters",
    "parse_kprobe_profile",
    "counts",
    "ranges_of",
    "trace_preserve_outside_scratch",
    "trace_contig_outside_scratch",
)

RULE_PRESERVE = "trace-preserve-outside-scratch"
RULE_CONTIG = "trace-contig-outside-scratch"
TRACE_RULES = {
    RULE_PRESERVE: "Memory preserved at runtime (keys added to the outgoing radix tree) "
                   "lies outside original scratch.",
    RULE_CONTIG: "Runtime contiguous and gigantic allocations lie outside original scratch.",
}
"""Each rule id and its one-line statement."""

ALLOC_KINDS = ("contig-alloc", "cma-alloc", "hugetlb-cma-alloc")
"""Event kinds that are runtime contiguous allocations."""

ORIGINAL = "original"
"""The class of ``kho_scratch[]`` (:func:`kho_inspect.views.bootlog.allocation_classes`)."""


def event_classifier(classes: Sequence[Tuple[str, RangeSet]]) -> Callable[[Range], str]:
    """The class of a range: the first class covering it, ``partly a+b``, ``other``
    (:func:`kho_inspect.bootlog.classify_range`); ``unknown`` without classes."""
    if not classes:
        return lambda rng: "unknown"
    return range_classifier(classes)


def classify_event(event: TraceEvent, classes: Sequence[Tuple[str, RangeSet]]) -> TraceEvent:
    """``event`` with its class set (:func:`event_classifier`; ``-`` without a range)."""
    rng = event.range
    return replace(event, klass="-" if rng is None else event_classifier(classes)(rng))


def classify_events(events: Iterable[TraceEvent], classes: Sequence[Tuple[str, RangeSet]]
                    ) -> Tuple[TraceEvent, ...]:
    """Every event classified (:func:`classify_event`)."""
    of = event_classifier(classes)
    return tuple(replace(e, klass="-" if e.range is None else of(e.range)) for e in events)


def _in_original(klass: str) -> bool:
    if klass == ORIGINAL:
        return True
    return klass.startswith("partly ") and ORIGINAL in klass[len("partly "):].split("+")


def _describe(e: TraceEvent) -> str:
    assert e.range is not None
    return f"{e.range} ({e.size} bytes)"


def event_findings(event: TraceEvent) -> List[TraceFinding]:
    """The violations one classified event shows (empty for most)."""
    if event.phys is None or not event.ok or not _in_original(event.klass):
        return []
    if event.kind == "preserve":
        under = f" under {event.api}()" if event.api else ""
        return [TraceFinding(RULE_PRESERVE, event.seq,
                             f"{event.probe}() preserved {_describe(event)}{under}, class "
                             f"{event.klass}: preserved memory inside original scratch.")]
    if event.kind in ALLOC_KINDS:
        return [TraceFinding(RULE_CONTIG, event.seq,
                             f"{event.probe} allocated {_describe(event)} for {event.comm} "
                             f"(pid {event.pid}), class {event.klass}: a runtime contiguous "
                             "allocation inside original scratch.")]
    return []


def findings(events: Iterable[TraceEvent]) -> Tuple[TraceFinding, ...]:
    """Every violation in classified ``events``, in event order."""
    return tuple(f for e in events for f in event_findings(e))


# --- lost events ---------------------------------------------------------------


def parse_kprobe_profile(text: str) -> Dict[str, Tuple[int, int]]:
    """``/sys/kernel/tracing/kprobe_profile``: ``{event: (hits, misses)}``.

    >>> parse_kprobe_profile("  p_kho_radix_add_key_bcc_42     17   0\\n"
    ...                      "  r_kho_radix_add_key_bcc_42     17   3\\n")
    {'p_kho_radix_add_key_bcc_42': (17, 0), 'r_kho_radix_add_key_bcc_42': (17, 3)}
    """
    out: Dict[str, Tuple[int, int]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1].isdigit() and words[-2].isdigit():
            out[words[0]] = (int(words[-2]), int(words[-1]))
    return out


def lost_from_counters(counters: Mapping[str, int], perf_lost: int = 0,
                       kprobe_profile: Optional[Mapping[str, Tuple[int, int]]] = None,
                       owner: Optional[str] = None) -> TraceLost:
    """The lost-event account of one trace.

    :param counters: the BPF program's loss counters summed over CPUs, by
        :data:`~kho_inspect.model.trace.LOST_KINDS` name.
    :param perf_lost: what ``lost_cb`` was told.
    :param kprobe_profile: :func:`parse_kprobe_profile` of the kprobe
        profile at the end of the trace.
    :param owner: the suffix BCC gives this process's kprobe events
        (``_bcc_<pid>``); only those events' misses count.
    """
    missed = 0
    if kprobe_profile and owner:
        missed = sum(m for name, (_, m) in kprobe_profile.items() if name.endswith(owner))
    known = {k: int(counters.get(k, 0)) for k in LOST_KINDS if k in counters}
    known.update(perf_lost=perf_lost + known.get("perf_lost", 0), kprobe_missed=missed)
    return TraceLost(**known)


def counts(events: Iterable[TraceEvent]) -> Dict[str, Counter]:
    """``{"probe": Counter, "kind": Counter, "class": Counter}`` of ``events``."""
    out: Dict[str, Counter] = {"probe": Counter(), "kind": Counter(), "class": Counter()}
    for e in events:
        out["probe"][e.probe] += 1
        out["kind"][e.kind] += 1
        if e.phys is not None:
            out["class"][e.klass] += 1
    return out


def ranges_of(events: Iterable[TraceEvent], kinds: Sequence[str], ok: bool = True) -> RangeSet:
    """The union of the ranges of events of ``kinds`` (successful ones by default)."""
    return RangeSet(Range(e.phys, e.size) for e in events
                    if e.kind in kinds and e.phys is not None and e.size
                    and (e.ok is None or e.ok == ok))


# --- the rules of check --trace ---------------------------------------------------------


def _classes(ctx: Context, run: TraceRun) -> List[Tuple[str, RangeSet]]:
    if run.classes:
        return [(name, RangeSet(ranges)) for name, ranges in run.classes.items()]
    scratch = ctx.cur.scratch
    if scratch is None or not scratch.classes.original:
        raise Skip("the trace was not classified and this kernel's scratch areas are unknown: "
                   f"{ctx.cur.why_missing('scratch')}")
    return [(ORIGINAL, scratch.classes.original)]


def _judge(ctx: Context, rule_id: str, kinds: Sequence[str], what: str) -> Outcome:
    run = ctx.trace()
    if ctx.cur.release and run.release != ctx.cur.release:
        raise Skip(f"the trace is of kernel {run.release}, this kernel is {ctx.cur.release}")
    classes = _classes(ctx, run)
    events = [e for e in classify_events(run.events, classes)
              if e.kind in kinds and e.ok and e.phys is not None]
    by_seq = {e.seq: e for e in events}
    evidence = [Evidence(f.message, range=by_seq[f.seq].range, klass=by_seq[f.seq].klass,
                         owner=f"{by_seq[f.seq].probe} ({by_seq[f.seq].comm}, pid "
                               f"{by_seq[f.seq].pid})")
                for f in findings(events) if f.rule == rule_id]
    original = dict(classes).get(ORIGINAL, RangeSet())
    return Outcome.of(evidence, f"{len(events)} traced {what} against {len(original)} "
                                "original scratch ranges")


@rule(RULE_PRESERVE, TRACE_RULES[RULE_PRESERVE],
      "kernel/liveupdate/kexec_handover.c:1148-1161 kho_preserve_folio() and :1223-1256 "
      "kho_preserve_pages() refuse ranges kho_scratch_overlap() finds in kho_scratch[] "
      "(CONFIG_KEXEC_HANDOVER_DEBUG); every preservation ends in kho_radix_add_key() (:215)",
      needs=("trace",), applies="kernels with KHO")
def trace_preserve_outside_scratch(ctx: Context) -> Outcome:
    return _judge(ctx, RULE_PRESERVE, ("preserve",), "radix tree keys")


@rule(RULE_CONTIG, TRACE_RULES[RULE_CONTIG],
      "mm/page_isolation.c:144-154 has_unmovable_pages() treats MIGRATE_CMA pageblocks "
      "(kho_scratch[]) as unmovable for non-CMA callers of alloc_contig_frozen_range_noprof() "
      "(mm/page_alloc.c:7306); cma_alloc() only allocates inside CMA areas",
      needs=("trace",), applies="kernels with KHO")
def trace_contig_outside_scratch(ctx: Context) -> Outcome:
    return _judge(ctx, RULE_CONTIG, ALLOC_KINDS, "contiguous allocations")

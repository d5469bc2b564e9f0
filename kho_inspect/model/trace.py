# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Trace model
-----------

The ``kho_inspect.model.trace`` module holds what ``kho-inspect trace`` saw
while BPF probes were attached to a running kernel: every event as a physical
range with the probe that produced it and the region class it lies in, how
each probe attached (or why it could not), what was lost on the way from the
kernel to user space, and the violations found as the events arrived.

A saved trace is a ``kho-inspect/trace`` document (:func:`trace_document`),
read back with :func:`load_trace_document`; ``check --trace FILE`` judges it
again. Nothing here touches drgn or BCC; every class round-trips through JSON.
"""

from typing import Any, Dict, Optional, Tuple

from kho_inspect.errors import InputError
from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel, document, from_json, open_document, to_json
from kho_inspect.ranges import Range

__all__ = (
    "TRACE_SCHEMA",
    "TRACE_VERSION",
    "ATTACH_MODES",
    "LOST_KINDS",
    "ProbeStatus",
    "TraceEvent",
    "TraceFinding",
    "TraceLost",
    "TraceRun",
    "trace_document",
    "load_trace_document",
)

TRACE_SCHEMA = "kho-inspect/trace"
TRACE_VERSION = 1

ATTACH_MODES = ("fentry", "fexit", "fentry+fexit", "kprobe", "kretprobe", "kprobe+kretprobe",
                "tracepoint")
"""How a probe can be attached, best first within each kind."""

LOST_KINDS = ("reserve_failed", "return_without_entry", "entry_not_stashed", "perf_lost",
              "kprobe_missed")
"""Ways an event can be lost, each counted where it happens:

``reserve_failed``
    the BPF program could not reserve ring-buffer space (or ``perf_submit``
    failed); counted in a per-CPU array by the program itself.
``return_without_entry``
    a return probe ran without the arguments its entry probe stashes (the
    entry was missed, or the trace started inside the call).
``entry_not_stashed``
    an entry probe could not stash its arguments (the map was full); its return
    then also counts as ``return_without_entry``.
``perf_lost``
    samples the kernel dropped from a full perf buffer (``lost_cb``).
``kprobe_missed``
    runs of our kprobes the kernel skipped (``misses`` in
    ``/sys/kernel/tracing/kprobe_profile``: recursion, kretprobe
    ``maxactive``).
"""


@frozen
class ProbeStatus(JsonModel):
    """One probe of the catalogue on this kernel.

    :param name: the probe's name in the catalogue (the kernel function or
        ``category:event`` tracepoint it watches).
    :param symbol: the kernel symbol or tracepoint actually used (a
        compiler clone such as ``foo.isra.0`` differs from ``name``).
    :param group: what it watches: ``contig`` (runtime contiguous and
        gigantic allocations), ``kho`` (KHO preservation), ``memblock``.
    :param attached: whether it is attached.
    :param how: the attach mode (one of :data:`ATTACH_MODES`) or ``None``.
    :param reason: why not attached, or what a fallback replaced
        (``fentry failed: ...; kprobe used``); ``""`` when nothing to say.
    :param hits: runs counted by the BPF program (entry side), kernel-side.
    """

    name: str
    symbol: str
    group: str
    attached: bool
    how: Optional[str] = None
    reason: str = ""
    hits: int = 0


@frozen
class TraceEvent(JsonModel):
    """One event as the probes reported it.

    :param seq: 0-based arrival order.
    :param ts_ns: ``bpf_ktime_get_ns()`` (``CLOCK_MONOTONIC``) at the event.
    :param probe: the probe's catalogue name.
    :param kind: what happened: ``contig-alloc``, ``cma-alloc``,
        ``hugetlb-cma-alloc``, ``preserve-api`` (a ``kho_preserve_*`` call
        returned), ``preserve`` (a key added to the radix tree), ``unpreserve``,
        ``memblock-reserve``, ``memblock-free``, ``memblock-add``,
        ``memblock-remove``.
    :param phys: first byte of the range (``phys_addr_t``), when the event has one.
    :param size: bytes; 0 with ``phys`` ``None``.
    :param ok: the call succeeded (``ret`` 0 or a non-NULL pointer); ``None``
        for events seen at entry only.
    :param ret: the raw return value (``int`` sign-extended, pointers as unsigned).
    :param args: the raw arguments as the probe read them.
    :param api: for ``preserve``/``unpreserve``: the outermost ``kho_preserve_*``
        or ``kho_unpreserve_*`` call the key was added under (``""``: a direct
        radix tree call).
    :param pid: thread group id.
    :param tid: thread id.
    :param comm: the task's ``comm``.
    :param cpu: the CPU it ran on.
    :param klass: the region class of the range (see
        :func:`kho_inspect.checks.trace.classify_events`) or ``unknown``.
    :param stack: kernel stack, innermost first, ``symbol+off`` each
        (``--stacks``; empty otherwise).
    """

    seq: int
    ts_ns: int
    probe: str
    kind: str
    phys: Optional[int]
    size: int
    ok: Optional[bool]
    ret: Optional[int]
    args: Tuple[int, ...]
    api: str = ""
    pid: int = 0
    tid: int = 0
    comm: str = ""
    cpu: int = 0
    klass: str = "unknown"
    stack: Tuple[str, ...] = ()

    @property
    def range(self) -> Optional[Range]:
        return None if self.phys is None else Range(self.phys, self.size)


@frozen
class TraceFinding(JsonModel):
    """A violation found in the events.

    :param rule: the rule id (an anchor in docs/kernel/invariants.md).
    :param seq: the offending event's ``seq``.
    :param message: one sentence with the range, the probe and the class.
    """

    rule: str
    seq: int
    message: str


@frozen
class TraceLost(JsonModel):
    """Events lost, by the place they were lost (see :data:`LOST_KINDS`)."""

    reserve_failed: int = 0
    return_without_entry: int = 0
    entry_not_stashed: int = 0
    perf_lost: int = 0
    kprobe_missed: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, k) for k in LOST_KINDS)


@frozen
class TraceRun(JsonModel):
    """A whole trace: what ran, what attached, what came, what was lost.

    :param release: ``uname -r`` of the traced kernel.
    :param started: wall-clock start (whole seconds since the epoch).
    :param milliseconds: how long the probes were attached.
    :param buffer: ``ringbuf`` or ``perf``.
    :param probes: every probe of the catalogue, attached or not.
    :param events: every event received, in arrival order.
    :param lost: what was lost and where.
    :param classes: ``{class: [{"base", "size"}, ...]}`` the events were
        classified against (empty: not classified).
    :param findings: violations, in event order.
    :param command: the command traced (``-- COMMAND``), if any.
    :param command_exit: its exit status (negative: killed by that signal).
    :param notes: what the reader should know (classes missing, ...).
    """

    release: str
    started: int
    milliseconds: int
    buffer: str
    probes: Tuple[ProbeStatus, ...]
    events: Tuple[TraceEvent, ...]
    lost: TraceLost
    classes: Dict[str, Tuple[Range, ...]]
    findings: Tuple[TraceFinding, ...] = ()
    command: Tuple[str, ...] = ()
    command_exit: Optional[int] = None
    notes: Tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return self.milliseconds / 1000

    def attached(self) -> Tuple[ProbeStatus, ...]:
        return tuple(p for p in self.probes if p.attached)


def trace_document(run: TraceRun) -> Dict[str, Any]:
    """The saved form: ``{"schema": "kho-inspect/trace", "version": 1, "trace": ...}``."""
    return document(TRACE_SCHEMA, TRACE_VERSION, {"trace": to_json(run)})


def load_trace_document(obj: Any, what: str = "the trace") -> TraceRun:
    """Read back a :func:`trace_document`.

    :raises InputError: not a trace document, a newer version, or damaged.
    """
    body = open_document(obj, TRACE_SCHEMA, TRACE_VERSION, what)
    try:
        return from_json(TraceRun, body["trace"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{what} is a damaged {TRACE_SCHEMA} document ({e}).") from e

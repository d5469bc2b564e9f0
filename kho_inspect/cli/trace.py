# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect trace``: BPF probes on runtime contiguous allocations and KHO preservations."""

import os
import signal
import subprocess
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

import click

from kho_inspect.checks.trace import (
    event_classifier,
    event_findings,
    lost_from_counters,
    parse_kprobe_profile,
)
from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.cli.snapshot import write_json
from kho_inspect.errors import EXIT_OK, EXIT_VIOLATIONS, KhoInspectError, TracingUnavailableError
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.model.trace import TraceEvent, TraceFinding, TraceRun, trace_document
from kho_inspect.ranges import RangeSet
from kho_inspect.render import emit
from kho_inspect.snapshot import load_snapshot_file, read_snapshot
from kho_inspect.tracing import (
    CATALOGUE,
    GROUPS,
    Plan,
    Tracer,
    kernel_facts,
    owner_suffix,
    plan_probes,
    probe_statuses,
    program_text,
    select_probes,
)
from kho_inspect.views.bootlog import CLASS_SECTIONS, allocation_classes
from kho_inspect.views.trace import EVENT_HEADER, event_line, finding_line, sections

__all__ = ("trace",)

TRACE_EPILOG = """\b
Examples:
  kho-inspect trace                          # trace until Ctrl-C, then a summary
  kho-inspect trace -d 10 -o trace.json      # ten seconds; every event saved as JSON
  kho-inspect trace -q -- sh -c 'echo 3 > $HP/hugepages-1048576kB/nr_hugepages'
                                             # one more 1 GiB page (HP=/sys/kernel/mm/hugepages)
  kho-inspect trace --probe kho --stacks     # KHO preservations only, with kernel stacks
  kho-inspect trace --snapshot n1.json       # classify against a saved snapshot's regions
  kho-inspect trace --ebpf                   # print the BPF program and exit
  kho-inspect check --trace trace.json       # judge a saved trace again
\b
Probes (--probe NAME or a group; all by default): contig (alloc_contig_frozen_range_noprof,
cma:cma_alloc_finish, hugetlb_cma_alloc_frozen_folio), kho (kho_preserve_folio/pages/
vmalloc, kho_alloc_preserve, kho_unpreserve_*, kho_radix_add_key/del_key), memblock
(__memblock_reserve, memblock_phys_free, memblock_add_node, memblock_remove; present after
boot only with ARCH_KEEP_MEMBLOCK or MEMORY_HOTPLUG). Each attaches with fentry/fexit where
BCC supports it and the attach works, else with kprobe/kretprobe; the summary says how,
or why not (__init and freed, inlined, notrace, missing). A probe named with --probe
that cannot attach is an error.
\b
Each event's range is classified against this kernel's regions (read with drgn unless
--snapshot FILE or --no-classes): original scratch, extended/unpreserved scratch, first
MiB, preserved (handed over by the previous kernel), other. A key added to the KHO radix
tree inside original scratch, or a runtime contiguous allocation there, is a violation.
Lost events are counted in the BPF program (ring-buffer reserve failures, returns without
their entry) and by the kernel (perf lost, kprobe misses), and reported; a bigger
--buffer-pages absorbs longer bursts.
\b
Boot-time memblock and gigantic allocations happen before any BPF program can run: use
kho-inspect bootlog on a memblock=debug log for those. Needs root and BCC
(python3-bpfcc from the distribution). Exit: 0 no violation, 1 violations, 2 could not
trace. Real output: docs/examples/trace.txt.
"""



def _classes(session: Session, snapshot_file: Optional[str], skip: bool
             ) -> Tuple[List[Tuple[str, RangeSet]], List[str]]:
    """The region classes to judge events by, and notes on what is missing."""
    if skip:
        return [], ["Events were not classified (--no-classes)."]
    snap: Optional[Snapshot]
    if snapshot_file is not None:
        snap = load_snapshot_file(snapshot_file, "snapshot")
    else:
        try:
            snap = read_snapshot(session.program(), sections=CLASS_SECTIONS, strict=session.debug)
        except KhoInspectError as e:
            return [], [f"Events were not classified: this kernel's regions could not be "
                        f"read ({e})."]
    classes = allocation_classes(snap)
    notes = [] if classes else ["No region classes: the snapshot has no scratch areas and "
                                "no preserved memory (not a KHO kernel?)."]
    return classes, notes


def _ebpf(probes: Sequence) -> str:
    usable = [(p, p.symbols[0] if p.symbols else p.name) for p in probes]
    head = ("/* kho-inspect trace: the BPF program for every probe named; when it runs, the\n"
            " * probes this kernel lacks are left out and each attaches with fentry/fexit or\n"
            " * kprobe/kretprobe. */\n")
    return head + program_text(usable)


def _require(plan: Plan, named: Sequence[str]) -> None:
    """A probe named by name must exist; a group named needs one of its probes."""
    for p, why in plan.missing:
        if p.name in named:
            raise TracingUnavailableError(f"The probe {p.name} cannot be attached on this "
                                          f"kernel: {why}")
    groups = {p.group for p, _, _ in plan.usable}
    for name in named:
        if name in GROUPS and name not in groups:
            raise TracingUnavailableError(f"No probe of the group {name} exists on this "
                                          "kernel: " + "; ".join(
                                              f"{p.name}: {why}" for p, why in plan.missing
                                              if p.group == name))
    if not plan.usable:
        raise TracingUnavailableError("None of the probes exists on this kernel: " + "; ".join(
            f"{p.name}: {why}" for p, why in plan.missing))


class _Collector:
    """Keeps each (classified) event as it comes, prints it and any violation at once."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.events: List[TraceEvent] = []
        self.findings: List[TraceFinding] = []
        self.t0: Optional[int] = None

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)
        if self.t0 is None:
            self.t0 = event.ts_ns
        if self.stream:
            click.echo(event_line(event, self.t0))
        for f in event_findings(event):
            self.findings.append(f)
            click.echo(finding_line(f), err=True)


class _Stop:
    """SIGINT/SIGTERM end the trace by a flag, not an exception: a KeyboardInterrupt
    raised inside BCC's ctypes callback would be swallowed there (and lose an event)."""

    def __init__(self) -> None:
        self.requested = False
        self.saved: List = []

    def __enter__(self) -> "_Stop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved.append((sig, signal.signal(sig, self._handle)))
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved:
            signal.signal(sig, handler)


def _run_loop(tracer: Tracer, stop: _Stop, duration: Optional[float],
              command: Sequence[str]) -> Optional[int]:
    """Poll until the duration ends, the command exits or SIGINT; the command's status."""
    deadline = None if duration is None else time.monotonic() + duration
    proc = None
    if command:
        try:
            proc = subprocess.Popen(list(command))
        except OSError as e:
            raise TracingUnavailableError(f"Cannot run {command[0]}: {e.strerror}") from e
    while not stop.requested:
        tracer.poll(100)
        if proc is not None and proc.poll() is not None:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
    if proc is None:
        return None
    if stop.requested and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    return proc.wait()


@click.command(epilog=TRACE_EPILOG)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-d", "--duration", type=click.FloatRange(min=0), metavar="S",
              help="Stop after S seconds (default: Ctrl-C, or when COMMAND exits).")
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Save the whole trace as a kho-inspect/trace JSON document.")
@click.option("-p", "--probe", "probe_names", multiple=True, metavar="NAME",
              help="Attach only this probe or group (contig, kho, memblock); repeatable. "
                   "A probe named here that cannot attach is an error.")
@click.option("--stacks", is_flag=True, help="Record the kernel stack of every event.")
@click.option("--snapshot", "snapshot_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Classify against this snapshot's regions instead of reading the kernel.")
@click.option("--no-classes", is_flag=True, help="Do not classify (no drgn, starts faster).")
@click.option("-q", "--quiet", is_flag=True, help="No line per event; only the summary.")
@click.option("--kprobes", is_flag=True, help="Use kprobes even where fentry/fexit work.")
@click.option("--perf-buffer", is_flag=True, help="Use a perf buffer, not a ring buffer.")
@click.option("--buffer-pages", type=click.IntRange(min=1), default=2048, show_default=True,
              metavar="N", help="Ring buffer size in pages (a power of two; per CPU for a "
                                "perf buffer).")
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF program and exit.")
@output_options
@pass_session
def trace(session: Session, command: Tuple[str, ...], duration: Optional[float],
          output: Optional[str], probe_names: Tuple[str, ...], stacks: bool,
          snapshot_file: Optional[str], no_classes: bool, quiet: bool, kprobes: bool,
          perf_buffer: bool, buffer_pages: int, ebpf: bool, fmt: str) -> int:
    """Trace runtime contiguous/gigantic allocations and KHO preservations with BPF.

    With -- COMMAND ..., trace while COMMAND runs, then print the summary.
    """
    probes = select_probes(probe_names)
    if buffer_pages & (buffer_pages - 1):
        raise click.BadParameter(f"{buffer_pages} is not a power of two",
                                 param_hint="--buffer-pages")
    if ebpf:
        click.echo(_ebpf(probes))
        return EXIT_OK
    Tracer.import_bcc()  # not root, no BCC: say so before reading anything
    classes, notes = _classes(session, snapshot_file, no_classes)
    plan = plan_probes(probes, *kernel_facts(probes))
    _require(plan, probe_names)
    collector = _Collector(stream=fmt == "text" and not quiet)
    tracer = Tracer(plan, collector, stacks=stacks, kfunc=False if kprobes else None,
                    ringbuf=False if perf_buffer else None, classify=event_classifier(classes),
                    buffer_pages=buffer_pages)
    try:
        run = _trace(tracer, plan, probes, collector, duration, command, classes, notes)
    finally:
        tracer.close()
    doc = trace_document(run)
    if output:
        write_json(output, doc)
    if collector.stream and collector.events:
        click.echo()
    emit(fmt, doc, lambda: sections(run, output))
    return EXIT_VIOLATIONS if run.findings else EXIT_OK


def _trace(tracer: Tracer, plan: Plan, probes: Sequence, collector: _Collector,
           duration: Optional[float], command: Sequence[str],
           classes: Sequence[Tuple[str, RangeSet]], notes: List[str]) -> TraceRun:
    with _Stop() as stop:  # until the summary is built: a Ctrl-C only ends the polling
        return _traced(tracer, stop, plan, probes, collector, duration, command, classes,
                       notes)


def _traced(tracer: Tracer, stop: _Stop, plan: Plan, probes: Sequence,
            collector: _Collector, duration: Optional[float], command: Sequence[str],
            classes: Sequence[Tuple[str, RangeSet]], notes: List[str]) -> TraceRun:
    started = time.time()
    tracer.start()
    attached = [s for s in tracer.status.values() if s.attached]
    if not attached:
        raise TracingUnavailableError("No probe could be attached: " + "; ".join(
            f"{s.name}: {s.reason}" for s in tracer.status.values()))
    how = ", ".join(sorted({s.how or "" for s in attached}))
    say: Callable[[str], None] = lambda m: click.echo(m, err=True)  # noqa: E731
    say(f"Tracing {len(attached)} of {len(probes)} probes ({how}; "
        f"{'ring' if tracer.ringbuf else 'perf'} buffer)... Hit Ctrl-C to end.")
    if collector.stream:
        click.echo(EVENT_HEADER)
    sys.stdout.flush()
    t0 = time.monotonic()
    status = _run_loop(tracer, stop, duration, command)
    seconds = time.monotonic() - t0
    profile = parse_kprobe_profile(tracer.kprobe_profile())  # gone once detached
    tracer.detach()
    tracer.drain()
    lost_counts, hits = tracer.counters()
    lost = lost_from_counters(lost_counts, tracer.perf_lost, profile, owner_suffix())
    if tracer.decode_errors:
        notes.append(f"{tracer.decode_errors} records could not be decoded.")
    return TraceRun(
        release=os.uname().release, started=int(started), milliseconds=round(seconds * 1000),
        buffer="ringbuf" if tracer.ringbuf else "perf",
        probes=probe_statuses(plan, tracer.status, hits, probes or CATALOGUE),
        events=tuple(collector.events), lost=lost,
        classes={name: ranges.ranges for name, ranges in classes},
        findings=tuple(collector.findings), command=tuple(command), command_exit=status,
        notes=tuple(notes))

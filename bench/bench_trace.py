#!/usr/bin/env python3
"""
kho-inspect trace under an allocation storm
-------------------------------------------

A lab guest booted with ``kho_lab_bench=trace`` on its command line runs, in its
stage, a *storm* of LUO memfd preservations (vm/guest/scenario.py ``storm``): 20
sessions, each preserving a 1024-page memfd through ``/dev/liveupdate`` and closing
(which unpreserves it). Every page is one ``kho_preserve_folio`` call, one key added
to the KHO radix tree, one ``kho_unpreserve_folio`` call and one key deleted: about
82,000 events. The guest runs the storm once alone, then under
``kho-inspect trace -q --no-classes --probe kho -- <storm>`` twice: with the default
8 MiB ring buffer (``nK/bench-trace.json``) and with a 1 MiB one
(``--buffer-pages 256``, ``nK/bench-trace-small.json``), which cannot hold the burst.

This script reads that run and prints, per trace, as ratios of one run:

* **received / produced**: the events Python decoded over the events the BPF program
  produced (its per-probe hit counters). Target with the default buffer: at least 0.99.
* **accounting**: produced = received + dropped, where dropped is what the program
  counted after a hit (failed ring-buffer reserves, entries it could not stash) and
  the perf buffer's ``lost_cb``. Target: exact, for both buffers (the small one must
  lose events and count each one).
* **events per second**: produced over the span of their kernel timestamps (how fast
  the storm made them), and received over the time the probes were attached (how fast
  Python decoded them: the poll loop only ends once the backlog is consumed).
* **slowdown**: the storm's time under trace over its time alone (fentry/fexit on
  every call; under TCG this is emulated code, so it says little about hardware).

It prints "target met" or "target MISSED" per ratio and exits 0; it exits 2 when the
run has no bench result. Run the lab once (it holds the VM for ~8 min under TCG)::

    flock /work/coord/vm.lock kho-inspect lab run --out /tmp/bench-trace --hops 0 \\
        --append kho_lab_bench=trace --command "kho status --json"
    python bench/bench_trace.py /tmp/bench-trace
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from kho_inspect.model.trace import LOST_KINDS, TraceRun, load_trace_document  # noqa: E402

RECEIVED_TARGET = 0.99
TRACES = (("bench-trace", "default ring buffer (8 MiB)"),
          ("bench-trace-small", "small ring buffer (1 MiB, --buffer-pages 256)"))


def _verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def report(trace: TraceRun, info: Dict[str, Any], title: str, default: bool) -> None:
    produced = sum(p.hits for p in trace.probes if p.attached)
    received = len(trace.events)
    ratio = received / produced if produced else 0.0
    how = ", ".join(sorted({p.how or "" for p in trace.attached()}))
    print(f"== {title}: {trace.buffer}, probes {how}")
    print(f"events produced (BPF hit counters): {produced}")
    print(f"events received and decoded:        {received}")
    print("lost: " + ", ".join(f"{k} {getattr(trace.lost, k)}" for k in LOST_KINDS)
          + f" (total {trace.lost.total})")
    if default:
        print(f"received / produced = {ratio:.4f} (target >= {RECEIVED_TARGET}): "
              f"{_verdict(ratio >= RECEIVED_TARGET)}")
    else:
        print(f"received / produced = {ratio:.4f} (a buffer too small for the burst)")
    dropped = trace.lost.reserve_failed + trace.lost.perf_lost + trace.lost.entry_not_stashed
    closes = produced == received + dropped
    print(f"accounting: {produced} produced = {received} received + {dropped} dropped after "
          f"their hit was counted: {_verdict(closes)}")
    if received > 1 and received == produced:  # with losses the span is not the storm's
        span = (trace.events[-1].ts_ns - trace.events[0].ts_ns) / 1e9
        print(f"produced per second (kernel time): {produced / span:,.0f} "
              f"({span:.2f} s from the first event to the last)")
    if trace.seconds:
        print(f"decoded per second (user space):   {received / trace.seconds:,.0f} "
              f"({trace.seconds:.1f} s attached)")
    alone, traced = info.get("storm_seconds"), info.get("traced_storm_seconds")
    if alone and traced:
        print(f"storm alone {alone:.2f} s, under trace {traced:.2f} s: slowdown "
              f"{traced / alone:.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the lab run's --out directory")
    args = ap.parse_args(argv)
    stages = sorted(p.parent for p in Path(args.out).glob("n*/bench-trace.json"))
    if not stages:
        print(f"bench_trace: no n*/bench-trace.json under {args.out} (boot the lab with "
              "--append kho_lab_bench=trace)", file=sys.stderr)
        return 2
    stage = stages[0]
    facts = json.loads((stage / "stage.json").read_text())
    first = True
    for name, title in TRACES:
        path = stage / f"{name}.json"
        if not path.is_file():
            print(f"== {title}: not run ({path} missing)")
            continue
        info = facts["trace"][name]
        trace = load_trace_document(json.loads(path.read_text()), str(path))
        if first:
            print(f"storm: {info['sessions']} LUO sessions x {info['pages']} pages, kernel "
                  f"{trace.release}")
        report(trace, info, title, name == "bench-trace")
        first = False
    return 0


if __name__ == "__main__":
    sys.exit(main())

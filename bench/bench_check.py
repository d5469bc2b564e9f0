#!/usr/bin/env python3
"""
End-to-end benchmark against drgn's bare load
---------------------------------------------

Times, in one run and alternately, two processes started by the same Python
interpreter on the same vmcore and vmlinux:

* **drgn's bare load**: ``drgn.Program()``, ``set_core_dump(VMCORE)`` and
  ``load_debug_info([VMLINUX], main=True)``, and nothing else (drgn plugins
  off, as with ``DRGN_DISABLE_PLUGINS='*'``): what any drgn session on that
  core pays before its first question. libkdumpfile cannot find the
  architecture of QEMU's kdump-compressed cores (what ``lab run --cores``
  writes); when the plain load fails on such a core, the program is created
  with the platform and vmcoreinfo of the file's kdump header, as drgn needs
  and as kho-inspect does, and the report says so;
* **kho-inspect**: ``python -m kho_inspect --core VMCORE --vmlinux VMLINUX
  COMMAND...`` end to end (interpreter start, imports, opening the core,
  reading, judging, rendering; the output goes to /dev/null). The command is
  ``check`` unless given after the options (for example ``memblock --json``).

Both read compiled bytecode, as installed packages do: each bench run gives
the two processes one fresh private bytecode cache (``PYTHONPYCACHEPREFIX``,
``PYTHONDONTWRITEBYTECODE`` unset), filled by the warm-up runs and deleted at
the end. Without it, a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` would
compile kho-inspect's sources on every run, while drgn, click and the standard
library load the bytecode their installers wrote. ``--compile`` times that
case instead (the environment as it is, no cache written).

It prints the best and the median of each and their ratio (target: at most
1.5x), the CPU time (user + system) of each, the load average before and
after, "target met" or "target MISSED", and exits 0. It exits 2, saying why,
when the files are missing or a command fails (exit status other than 0, or
1 for ``check``, which means that a rule failed). ``--dry-run`` only checks
the files and prints what it would run.

Run as ``python bench/bench_check.py --core DIR/n1/vmcore --vmlinux VMLINUX``
(the lab writes ``DIR/nK/vmcore`` with ``kho-inspect lab run --cores``).
"""

import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from kho_inspect import kdump  # noqa: E402

TARGET = 1.5
BARE_LOAD = ("import sys, drgn; prog = drgn.Program(); prog.set_core_dump(sys.argv[1]); "
             "prog.load_debug_info([sys.argv[2]], main=True)")
# The same, given the platform and vmcoreinfo (argv 3 and 4, in hex) up front.
BARE_LOAD_HINTED = (
    "import sys, drgn; prog = drgn.Program(drgn.Platform(drgn.Architecture[sys.argv[3]]), "
    "vmcoreinfo=bytes.fromhex(sys.argv[4])); prog.set_core_dump(sys.argv[1]); "
    "prog.load_debug_info([sys.argv[2]], main=True)")
# kdump header machine -> drgn.Architecture name
ARCHES = {"x86_64": "X86_64", "aarch64": "AARCH64", "ppc64le": "PPC64", "ppc64": "PPC64",
          "s390x": "S390X", "riscv64": "RISCV64", "arm": "ARM", "i386": "I386"}
# Exit statuses that still mean "the command did its whole job".
OK_STATUS: Dict[str, Sequence[int]] = {"check": (0, 1)}


class Job(NamedTuple):
    name: str
    argv: List[str]
    env: Dict[str, str]
    ok: Sequence[int]


class BenchError(Exception):
    """A measurement that cannot be made (one sentence)."""


def bytecode_env(cache: Optional[str]) -> Dict[str, str]:
    """The environment of both processes: bytecode from ``cache`` (written on
    first use), or, without one, the environment as it is."""
    env = dict(os.environ)
    if cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
    return env


def jobs(core: str, vmlinux: str, command: List[str],
         cache: Optional[str] = None) -> List[Job]:
    """The two processes to time: drgn's bare load, then kho-inspect."""
    python = sys.executable
    bare_env = dict(bytecode_env(cache), DRGN_DISABLE_PLUGINS="*")
    tool_env = bytecode_env(cache)
    tool_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return [
        Job("drgn bare load", [python, "-c", BARE_LOAD, core, vmlinux], bare_env, (0,)),
        Job("kho-inspect " + " ".join(command),
            [python, "-m", "kho_inspect", "--core", core, "--vmlinux", vmlinux, *command],
            tool_env, OK_STATUS.get(command[0], (0,))),
    ]


def hinted(bare: Job, core: str) -> Optional[Job]:
    """The bare load given the kdump header's platform and vmcoreinfo, if it has them."""
    try:
        header = kdump.read_header(core)
    except (OSError, ValueError, kdump.InputError):
        return None
    if header is None or header.vmcoreinfo is None or header.machine not in ARCHES:
        return None
    argv = [bare.argv[0], "-c", BARE_LOAD_HINTED, *bare.argv[3:5], ARCHES[header.machine],
            header.vmcoreinfo.hex()]
    return bare._replace(name="drgn bare load (platform + vmcoreinfo given)", argv=argv)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(job: Job) -> Tuple[float, float]:
    """Seconds one run of ``job`` took, wall clock and CPU (user + system);
    raises BenchError if it failed."""
    cpu = _children_cpu()
    start = time.perf_counter()
    # In ROOT: ``python -m`` puts the working directory first on sys.path.
    proc = subprocess.run(job.argv, env=job.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if proc.returncode not in job.ok:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise BenchError(f"{job.name} exited with status {proc.returncode}: {tail[0]}")
    return elapsed, cpu


def warm_up(todo: List[Job], core: str) -> List[Job]:
    """Run each job once (which also fills the page cache with the core and
    vmlinux); a bare load that fails is retried with the kdump header's hints."""
    try:
        run_once(todo[0])
    except BenchError:
        retry = hinted(todo[0], core)
        if retry is None:
            raise
        todo = [retry] + todo[1:]
        run_once(todo[0])
    for job in todo[1:]:
        run_once(job)
    return todo


def measure(todo: List[Job], rounds: int) -> Tuple[List[List[float]], List[List[float]]]:
    """Wall-clock and CPU times of each job, timed in turn round after round
    (warm them up first)."""
    times: List[List[float]] = [[] for _ in todo]
    cpus: List[List[float]] = [[] for _ in todo]
    for _ in range(rounds):
        for i, job in enumerate(todo):
            wall, cpu = run_once(job)
            times[i].append(wall)
            cpus[i].append(cpu)
    return times, cpus


def check_files(core: str, vmlinux: str) -> None:
    for what, path in (("vmcore", core), ("vmlinux", vmlinux)):
        if not os.path.isfile(path):
            raise BenchError(f"the {what} {path} does not exist or is not a file")


def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Measured(NamedTuple):
    times: List[List[float]]
    cpus: List[List[float]]
    load_before: str
    load_after: str
    bytecode: str


def report(todo: List[Job], m: Measured, core: str) -> None:
    size = os.path.getsize(core)
    print(f"kho-inspect end to end against drgn's bare load of the same core "
          f"({size / (1 << 20):.0f} MiB) and vmlinux; {len(m.times[0])} alternating rounds "
          f"after one warm-up run each\nbytecode: {m.bytecode}\n"
          f"load average: {m.load_before} before, {m.load_after} after\n")
    width = max(len(job.name) for job in todo)
    for job, secs, cpus in zip(todo, m.times, m.cpus):
        print(f"  {job.name:<{width}}  best {min(secs):7.3f} s  median "
              f"{statistics.median(secs):7.3f} s  max {max(secs):7.3f} s  "
              f"CPU median {statistics.median(cpus):7.3f} s")
    bare, tool = m.times
    best = min(tool) / min(bare)
    median = statistics.median(tool) / statistics.median(bare)
    rounds = sorted(t / b for b, t in zip(bare, tool))
    cpu = statistics.median(m.cpus[1]) / statistics.median(m.cpus[0])
    print(f"\n  ratio, best / best       = {best:.2f}x "
          f"(target <= {TARGET}x): {verdict(best <= TARGET)}")
    print(f"  ratio, median / median   = {median:.2f}x")
    print(f"  ratio per round          = {rounds[0]:.2f}x .. {rounds[-1]:.2f}x")
    print(f"  CPU time, median / median = {cpu:.2f}x")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1],
        usage="%(prog)s --core VMCORE --vmlinux VMLINUX [--repeat N] [--dry-run] [--compile] "
              "[COMMAND ...]")
    parser.add_argument("--core", required=True, help="the vmcore (DIR/nK/vmcore of a lab run)")
    parser.add_argument("--vmlinux", required=True, help="the vmlinux of that kernel")
    parser.add_argument("--repeat", type=int, default=5,
                        help="alternating timed rounds (default 5)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the files and print the commands, time nothing")
    parser.add_argument("--compile", action="store_true",
                        help="no private bytecode cache: the environment as it is (with "
                             "PYTHONDONTWRITEBYTECODE=1, kho-inspect compiles its sources "
                             "on every run)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the kho-inspect command and its options (default: check)")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] or ["check"]
    args.core, args.vmlinux = os.path.abspath(args.core), os.path.abspath(args.vmlinux)
    cache = None if args.compile or args.dry_run else tempfile.mkdtemp(prefix="bench-pyc-")
    todo = jobs(args.core, args.vmlinux, command, cache)
    try:
        check_files(args.core, args.vmlinux)
        if args.dry_run:
            for job in todo:
                plugins = job.env.get("DRGN_DISABLE_PLUGINS")
                prefix = f"DRGN_DISABLE_PLUGINS={shlex.quote(plugins)} " if plugins else ""
                print(f"{job.name}: {prefix}{shlex.join(job.argv)}")
            return 0
        todo = warm_up(todo, args.core)
        before = load_average()
        times, cpus = measure(todo, max(1, args.repeat))
        measured = Measured(times, cpus, before, load_average(), bytecode_note(cache))
    except BenchError as e:
        print(f"bench_check: {e}", file=sys.stderr)
        return 2
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    report(todo, measured, args.core)
    return 0


def bytecode_note(cache: Optional[str]) -> str:
    if cache is not None:
        return "read from a private cache the warm-up runs wrote (PYTHONPYCACHEPREFIX)"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return ("as the environment has it (PYTHONDONTWRITEBYTECODE set: sources without "
                "bytecode are compiled on every run)")
    return "as the environment has it"


if __name__ == "__main__":
    sys.exit(main())

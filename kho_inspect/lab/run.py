"""
``lab run``: the handover scenario
----------------------------------

Boot the lab kernel under QEMU with ``kho=on liveupdate=on reserve_mem=...``,
let the guest (``vm/guest/scenario.py``) preserve memory, run kho-inspect and
kexec ``hops`` times, and collect everything in the output directory::

    DIR/lab.json           the guest's configuration (written here)
    DIR/serial.log         the serial console of every kernel
    DIR/qemu.log           QEMU's own output
    DIR/summary.json       per stage facts and verdicts, kernel files, accel, timings
    DIR/nK/                stage K: stage.json, dmesg.txt, cmdline, memblock/, kho/,
                           kho-inspect/<command>.json (+ .txt, .err, commands.json)
    DIR/nK/vmcore          with --cores: kdump-compressed core taken at the pause
    DIR/nK/host/           with --cores: host-side kho-inspect --qemu results

With ``--cores`` the guest stops after its commands ran (it creates
``nK/.paused`` and waits for ``nK/.resume``); the host then dumps the guest over
QMP and runs the same commands against it with ``--qemu``.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from kho_inspect.errors import InputError, LabError
from kho_inspect.kdump import unflatten_in_place
from kho_inspect.lab import repo_root
from kho_inspect.lab.batch import DEFAULT_COMMANDS, KHO_BOOT_COMMANDS, batch_argv
from kho_inspect.lab.kernel import Kernel, ensure_kernel, kernel_from_dir
from kho_inspect.lab.qemu import (
    Qmp,
    Share,
    VmSpec,
    choose_accel,
    kernel_cmdline_root,
    parse_memory,
    qemu_argv,
)
from kho_inspect.lab.rootfs import BOOTSTRAP_PATH, ensure_rootfs

__all__ = ("RunOptions", "run_lab", "stage_commands", "judge_stage", "judge_run", "serial_tail",
           "RESERVE_MEM_NAME")

RESERVE_MEM_NAME = "khoinspect"
HOST_COMMANDS_TIMEOUT = 600
GUEST_OUT = "/lab/out"
GUEST_KERNEL = "/lab/kernel"
_MARKER = re.compile(r"KHO-LAB: (n\d+): (.*)")
_ECHO = re.compile(r"KHO-LAB: |Kernel panic|BUG: |WARNING: ")
_OWNED = re.compile(r"^(n\d+|serial\.log|qemu\.log|summary\.json|lab\.json|state\.json)$")


@dataclass
class RunOptions:
    """``lab run`` options; see :mod:`kho_inspect.cli.lab`."""

    out: Path
    kernel_dir: Optional[Path] = None
    memory: str = "6G"
    cpus: int = 2
    numa: int = 0
    append: str = ""
    hops: int = 1
    accel: str = "auto"
    timeout: float = 1800.0
    cores: bool = False
    commands: Tuple[str, ...] = DEFAULT_COMMANDS
    kho_boot_commands: Tuple[str, ...] = KHO_BOOT_COMMANDS
    memfd_mib: int = 64
    reserve_mem: str = f"16M:2M:{RESERVE_MEM_NAME}"
    echo: bool = True


@dataclass
class _Run:
    """State of one run while QEMU executes."""

    opts: RunOptions
    kernel: Kernel
    inspect_socket: Path
    timings: Dict[str, Any] = field(default_factory=dict)
    stage_seen: Dict[str, float] = field(default_factory=dict)
    host: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.start, 1)


# --- preparation --------------------------------------------------------------------------

def _say(opts: RunOptions, msg: str) -> None:
    if opts.echo:
        click.echo(f"lab: {msg}", err=True)


def _clean_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():
        if _OWNED.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _validate(opts: RunOptions) -> int:
    if opts.hops < 0:
        raise LabError(f"--hops {opts.hops} is negative: give 0 or more kexecs.")
    if opts.cpus < 1:
        raise LabError(f"--cpus {opts.cpus} must be at least 1.")
    if opts.numa < 0:
        raise LabError(f"--numa {opts.numa} must be 0 (no NUMA) or more nodes.")
    return parse_memory(opts.memory)


def kernel_share(kernel: Kernel) -> Tuple[Path, str, str]:
    """The directory to share for ``kernel`` and the guest paths of bzImage and vmlinux."""
    base = Path(os.path.commonpath([kernel.bzimage.parent, kernel.vmlinux.parent]))
    return (base, f"{GUEST_KERNEL}/{kernel.bzimage.relative_to(base)}",
            f"{GUEST_KERNEL}/{kernel.vmlinux.relative_to(base)}")


def kernel_cmdline(opts: RunOptions) -> str:
    # log_buf_len: with memblock=debug a KHO boot logs one line per preserved block
    # (16k lines, ~1.8 MB, for the memfd) before the console starts; the default 2 MB
    # buffer loses the early messages the verdicts look for ("Revived memory
    # reservation"). Not more: the buffer is a memblock allocation, and KHO sizes
    # its scratch areas from those (64M grew scratch from 740 MiB to 1.9 GiB).
    words = ["console=ttyS0", "panic=-1", "log_buf_len=8M", "kho=on", "liveupdate=on",
             f"reserve_mem={opts.reserve_mem}", kernel_cmdline_root(), f"init={BOOTSTRAP_PATH}"]
    if opts.append.strip():
        words.append(opts.append.strip())
    return " ".join(words)


def stage_commands(opts: RunOptions, stage: str) -> Tuple[str, ...]:
    """The commands stage ``nK`` runs: the list, plus the KHO-boot sources from n1 on."""
    return opts.commands + (opts.kho_boot_commands if stage != "n0" else ())


def _guest_config(opts: RunOptions, kernel: Kernel) -> Dict[str, Any]:
    _, bz, vml = kernel_share(kernel)
    stages = (f"n{i}" for i in range(opts.hops + 1))
    return {"hops": opts.hops, "cores": opts.cores,
            "stage_commands": {name: list(stage_commands(opts, name)) for name in stages},
            "bzImage": bz, "vmlinux": vml, "memfd_bytes": opts.memfd_mib << 20,
            "reserve_mem_name": opts.reserve_mem.rsplit(":", 1)[-1],
            "pause_timeout": opts.timeout}


def _timed(timings: Dict[str, Any], key: str, func: Any, *args: Any) -> Any:
    start = time.monotonic()
    value = func(*args)
    timings[key] = round(time.monotonic() - start, 1)
    return value


# --- the run ------------------------------------------------------------------------------

def run_lab(opts: RunOptions) -> Dict[str, Any]:
    """Run the scenario; returns the summary (also written to ``DIR/summary.json``).

    :raises LabError: when the lab cannot be prepared or QEMU cannot start.
    """
    memory_mib = _validate(opts)
    out = opts.out.resolve()
    _clean_out(out)
    timings: Dict[str, Any] = {}
    kernel = (kernel_from_dir(opts.kernel_dir) if opts.kernel_dir
              else _timed(timings, "kernel_s", ensure_kernel))
    rootfs = _timed(timings, "rootfs_s", ensure_rootfs)
    accel, why = _timed(timings, "accel_probe_s", choose_accel, opts.accel, kernel.bzimage)
    _say(opts, f"accelerator {accel} ({why})")
    (out / "lab.json").write_text(json.dumps(_guest_config(opts, kernel), indent=2) + "\n")
    with tempfile.TemporaryDirectory(prefix="kholab-") as tmp:
        kdir, _, _ = kernel_share(kernel)
        spec = VmSpec(bzimage=kernel.bzimage, rootfs=rootfs.path, cmdline=kernel_cmdline(opts),
                      serial_log=out / "serial.log", qmp_socket=Path(tmp) / "qmp.sock",
                      inspect_socket=Path(tmp) / "inspect.sock",
                      memory_mib=memory_mib, cpus=opts.cpus, numa=opts.numa, accel=accel,
                      shares=(Share("khosrc", repo_root()), Share("khokernel", kdir),
                              Share("khoout", out, readonly=False)))
        run = _Run(opts, kernel, spec.inspect_socket, timings=timings)
        _execute(run, spec)
    summary = _summary(run, spec, rootfs.path, why)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _execute(run: _Run, spec: VmSpec) -> None:
    argv = qemu_argv(spec)
    run.timings["qemu_argv"] = argv
    _say(run.opts, f"booting {run.kernel.bzimage} ({spec.accel}, {spec.memory_mib} MiB, "
                   f"{spec.cpus} CPUs); serial log {spec.serial_log}")
    spec.serial_log.touch()
    vm_start = time.monotonic()
    with open(run.opts.out / "qemu.log", "w") as qlog:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog,
                                    stderr=subprocess.STDOUT)
        except OSError as e:
            raise LabError(f"Cannot start {argv[0]}: {e.strerror}; run vm/ci-deps.sh.") from e
        try:
            qmp = Qmp(spec.qmp_socket)
        except LabError:
            proc.kill()
            proc.wait()
            raise
        try:
            _monitor(run, proc, qmp, spec.serial_log)
        finally:
            _stop(proc, qmp)
    run.timings["vm_s"] = round(time.monotonic() - vm_start, 1)


def _stop(proc: "subprocess.Popen[bytes]", qmp: Qmp) -> None:
    if proc.poll() is None:
        qmp.quit()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    qmp.close()


def _monitor(run: _Run, proc: "subprocess.Popen[bytes]", qmp: Qmp, serial: Path) -> None:
    deadline = time.monotonic() + run.opts.timeout
    offset = 0
    while True:
        offset = _follow_serial(run, serial, offset)
        _handle_pauses(run, qmp)
        if proc.poll() is not None:
            _follow_serial(run, serial, offset)
            if proc.returncode != 0:
                run.problems.append(f"QEMU exited {proc.returncode} (see qemu.log)")
            return
        if time.monotonic() > deadline:
            run.problems.append(f"the run timed out after {run.opts.timeout:.0f} s")
            return
        time.sleep(0.25)


def _follow_serial(run: _Run, serial: Path, offset: int) -> int:
    with open(serial, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode(errors="replace").splitlines():
        m = _MARKER.search(line)
        if m and m.group(1) not in run.stage_seen:
            run.stage_seen[m.group(1)] = run.elapsed()
        if run.opts.echo and _ECHO.search(line):
            click.echo(f"guest: {line[line.find('KHO-LAB: ') + 9:] if m else line.strip()}",
                       err=True)
    return offset + end


def _handle_pauses(run: _Run, qmp: Qmp) -> None:
    for paused in sorted(run.opts.out.resolve().glob("n*/.paused")):
        stage_dir = paused.parent
        if stage_dir.name in run.host:
            continue
        run.host[stage_dir.name] = _inspect_paused(run, qmp, stage_dir)
        (stage_dir / ".resume").write_text("go\n")


def _inspect_paused(run: _Run, qmp: Qmp, stage_dir: Path) -> Dict[str, Any]:
    info: Dict[str, Any] = {}
    start = time.monotonic()
    try:
        _say(run.opts, f"{stage_dir.name}: dumping the guest to {stage_dir / 'vmcore'}")
        info["dump_format"] = qmp.dump(stage_dir / "vmcore", timeout=run.opts.timeout)
        # QEMU < 8.2 writes kdump cores flattened, which drgn cannot read.
        info["unflattened"] = unflatten_in_place(stage_dir / "vmcore")
        info["vmcore"] = str(stage_dir / "vmcore")
    except (LabError, InputError, OSError) as e:
        info["dump_error"] = str(e)
        run.problems.append(f"{stage_dir.name}: the core dump failed: {e}")
    info["dump_s"] = round(time.monotonic() - start, 1)
    start = time.monotonic()
    info["commands"] = _host_commands(run, stage_dir / "host")
    info["commands_s"] = round(time.monotonic() - start, 1)
    return info


def _host_commands(run: _Run, outdir: Path) -> Dict[str, int]:
    argv = batch_argv(outdir, stage_commands(run.opts, outdir.parent.name),
                      ["--qemu", str(run.inspect_socket), "--vmlinux", str(run.kernel.vmlinux)])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(repo_root()), os.environ.get("PYTHONPATH", "")) if p))
    _say(run.opts, f"{outdir.parent.name}: running kho-inspect --qemu on the host")
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=HOST_COMMANDS_TIMEOUT)
    except subprocess.TimeoutExpired:
        run.problems.append(f"{outdir.parent.name}: host-side kho-inspect --qemu did not finish "
                            f"within {HOST_COMMANDS_TIMEOUT} s")
        return {}
    records_path = outdir / "commands.json"
    if not records_path.is_file():
        run.problems.append(f"{outdir.parent.name}: host-side kho-inspect did not run: "
                            f"{proc.stderr.strip()[-300:]}")
        return {}
    return {r["command"]: r["exit_code"] for r in json.loads(records_path.read_text())}


# --- verdicts -----------------------------------------------------------------------------

def expected_test_kho(index: int) -> str:
    """test_kho restores in every odd stage and preserves (again) in every even one."""
    return "restore succeeded" if index % 2 else "preserved"


def judge_stage(stage: Dict[str, Any], index: int, hops: int) -> List[str]:
    """Problems of one stage's ``stage.json`` (empty: verified)."""
    problems = [f"error: {e}" for e in stage.get("errors", [])]
    checks = [
        (stage.get("kho_enabled") is True, "KHO is not enabled"),
        (stage.get("kho_boot") is (index > 0),
         f"KHO boot is {stage.get('kho_boot')}, expected {index > 0}"),
        (stage.get("test_kho") == expected_test_kho(index),
         f"test_kho: {stage.get('test_kho')}, expected {expected_test_kho(index)}"),
    ]
    if index > 0:
        memfd = stage.get("memfd_in") or {}
        checks.append((memfd.get("verified") is True,
                       f"the memfd from n{index - 1} was not verified: {memfd or 'missing'}"))
        checks.append(((stage.get("reserve_mem") or {}).get("revived") is True,
                       "reserve_mem was not revived from KHO"))
    if index < hops:
        checks.append(((stage.get("memfd_out") or {}).get("preserved") is True,
                       "no memfd was preserved for the next kernel"))
        checks.append((stage.get("kexec_loaded") is True, "kexec -s -l did not load"))
    problems += [msg for ok, msg in checks if not ok]
    return problems


def _load_stage(out: Path, name: str) -> Optional[Dict[str, Any]]:
    path = out / name / "stage.json"
    return json.loads(path.read_text()) if path.is_file() else None


def judge_run(out: Path, hops: int, cores: bool,
              host: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per-stage summary entries with their verdicts."""
    stages: Dict[str, Dict[str, Any]] = {}
    previous_reserve: Optional[Dict[str, Any]] = None
    for index in range(hops + 1):
        name = f"n{index}"
        stage = _load_stage(out, name)
        if stage is None:
            stages[name] = {"verified": False, "problems": ["the stage never ran"]}
            continue
        problems = judge_stage(stage, index, hops)
        reserve = stage.get("reserve_mem") or {}
        if previous_reserve and reserve.get("start") != previous_reserve.get("start"):
            problems.append(f"reserve_mem moved: {reserve.get('start')} != "
                            f"{previous_reserve.get('start')}")
        previous_reserve = reserve
        if cores and not (out / name / "vmcore").is_file():
            problems.append("no vmcore was saved")
        stages[name] = _stage_entry(stage, problems, host.get(name))
    return stages


def _stage_entry(stage: Dict[str, Any], problems: List[str],
                 host: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    memfd_in = stage.get("memfd_in")
    return {
        "verified": not problems,
        "problems": problems,
        "release": stage.get("release"),
        "kho_boot": stage.get("kho_boot"),
        "test_kho": stage.get("test_kho"),
        "memfd_verified": memfd_in.get("verified") if memfd_in else None,
        "memfd_preserved": (stage.get("memfd_out") or {}).get("preserved", False),
        "reserve_mem": stage.get("reserve_mem"),
        "hugepages": stage.get("hugepages"),
        "commands": stage.get("commands", {}),
        "host": host,
    }


def _summary(run: _Run, spec: VmSpec, rootfs: Path, accel_reason: str) -> Dict[str, Any]:
    opts = run.opts
    out = opts.out.resolve()
    stages = judge_run(out, opts.hops, opts.cores, run.host)
    ok = not run.problems and all(s["verified"] for s in stages.values())
    commands_ok = all(code == 0 for s in stages.values() for code in s["commands"].values())
    timings = dict(run.timings)
    argv = timings.pop("qemu_argv", [])
    timings["stage_seen_s"] = run.stage_seen
    return {
        "ok": ok,
        "commands_ok": commands_ok,
        "problems": run.problems,
        "hops": opts.hops,
        "bzImage": str(run.kernel.bzimage),
        "vmlinux": str(run.kernel.vmlinux),
        "kernel": run.kernel.to_json(),
        "rootfs": str(rootfs),
        "accel": spec.accel,
        "accel_reason": accel_reason,
        "memory_mib": spec.memory_mib,
        "cpus": spec.cpus,
        "numa": spec.numa,
        "cmdline": spec.cmdline,
        "cores": opts.cores,
        "commands": list(opts.commands),
        "qemu": argv,
        "timings": timings,
        "stages": stages,
    }


def serial_tail(out: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of ``DIR/serial.log``."""
    path = out / "serial.log"
    if not path.is_file():
        return "(no serial log)"
    text = path.read_text(errors="replace").rstrip().splitlines()
    return "\n".join(text[-lines:])

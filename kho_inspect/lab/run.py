# SPDX-License-Identifier: LGPL-2.1-or-later
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
    DIR/nK/before-kexec/   the commands run right before kexec -e (if any), same layout
    DIR/nK/vmcore          with --cores: kdump-compressed core taken at the pause
    DIR/nK/host/           with --cores: host-side kho-inspect --qemu results

With ``--cores`` the guest stops after its commands ran (it creates
``nK/.paused`` and waits for ``nK/.resume``); the host then dumps the guest over
QMP and runs the same commands against it with ``--qemu``.

Which commands run where is :func:`stage_commands` (placeholders such as
``{previous_dir}`` are described in :mod:`kho_inspect.lab.commands`).

Command lines: n0 boots with :func:`kernel_cmdline` plus its ``stage_append``
words; every KHO boot keeps ``kexec --reuse-cmdline`` and appends the next
stage's ``stage_append`` words. A stage's words are appended for that stage
only: the guest removes them from the reused line before kexec, so a later
stage gets them only when it names them itself (one stage can drive a case,
such as a fresh ``reserve_mem=`` on a KHO boot, without the next kernels
inheriting it). :func:`expected_cmdline` is what each stage must see. The
lab kernel chosen by name (``--kernel``) may add words of its own to the
shared line: ``7.3+unpreserved-broken`` adds ``kho_lab_hugetlb_in_scratch``
(see :mod:`kho_inspect.lab.kernel`).

An arm64 guest (``--arch arm64``) boots an initramfs (busybox and the lab's
``khoguest`` helper, :func:`~kho_inspect.lab.rootfs.ensure_initramfs`) instead of
the x86 Debian root filesystem: ``vm/guest/init-initramfs`` preserves and verifies
the memfd, copies debugfs and the kernel log, kexecs, and pauses at every stage;
kho-inspect has no Python to run on there, so every command (the before-kexec
snapshot included) runs on the host at the pause, against the guest over QMP, and
the host writes ``nK/stage.json`` from the files the guest left
(:func:`initramfs_stage`). Such a run always saves cores.

Progress goes to the ``kho_inspect.lab.run`` logger, the guest's console
lines to ``kho_inspect.lab.guest``.
"""

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from kho_inspect.errors import InputError, LabError
from kho_inspect.kdump import unflatten_in_place
from kho_inspect.lab import package_dir, vm_dir
from kho_inspect.lab.commands import (
    BEFORE_KEXEC_COMMANDS,
    DEFAULT_COMMANDS,
    KHO_BOOT_COMMANDS,
    batch_argv,
    expand,
    stage_index,
)
from kho_inspect.lab.kernel import (
    DEFAULT_ARCH,
    PLAIN,
    Kernel,
    ensure_kernel,
    kernel_from_dir,
    lab_kernel,
)
from kho_inspect.lab.qemu import (
    MACHINES,
    Qmp,
    Share,
    VmSpec,
    choose_accel,
    kernel_cmdline_root,
    parse_memory,
    qemu_argv,
)
from kho_inspect.lab.results import read_json
from kho_inspect.lab.rootfs import (
    BOOTSTRAP_PATH,
    INITRAMFS_ARCHES,
    INITRAMFS_NAME,
    VM_TAG,
    ensure_guest_root,
)

__all__ = ("RunOptions", "StageCommands", "run_lab", "stage_commands", "stage_names",
           "kernel_cmdline", "expected_cmdline", "parse_size", "parse_stage_append",
           "judge_stage", "judge_run", "RESERVE_MEM_NAME", "GUEST_OUT", "run_arch",
           "initramfs_stage")

log = logging.getLogger(__name__)
guest_log = logging.getLogger("kho_inspect.lab.guest")

RESERVE_MEM_NAME = "khoinspect"
HOST_COMMANDS_TIMEOUT = 600
GUEST_OUT = "/lab/out"
GUEST_KERNEL = "/lab/kernel"
MEMFD_BLOCK = 4096  # the guest fills and verifies the memfd in 4 KiB blocks
PACKAGE_TAG = "khopkg"  # 9p tag of the kho_inspect package the guest runs (vm/guest/init)
_SIZE = re.compile(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", re.IGNORECASE)
_MARKER = re.compile(r"KHO-LAB: (n\d+): (.*)")
_ECHO = re.compile(r"KHO-LAB: |Kernel panic|BUG: |WARNING: ")
_OWNED = re.compile(r"^(n\d+|serial\.log|qemu\.log|summary\.json|lab\.json|state\.json)$")


@dataclass
class RunOptions:
    """``lab run`` options; see :mod:`kho_inspect.cli.lab`."""

    out: Path
    kernel_dir: Optional[Path] = None
    # a lab kernel by name (kho_inspect.lab.kernel.LAB_KERNELS); not with kernel_dir
    kernel: str = PLAIN
    # x86_64 or arm64 (kho_inspect.lab.kernel.ARCHES); None: the lab kernel's own
    arch: Optional[str] = None
    memory: str = "6G"
    cpus: int = 2
    numa: int = 0
    append: str = ""
    # extra command-line words of one stage only: {"n1": "reserve_mem=64M:4K:late"}
    stage_append: Dict[str, str] = field(default_factory=dict)
    hops: int = 1
    accel: str = "auto"
    timeout: float = 1800.0
    cores: bool = False
    commands: Tuple[str, ...] = DEFAULT_COMMANDS
    kho_boot_commands: Tuple[str, ...] = KHO_BOOT_COMMANDS
    before_kexec_commands: Tuple[str, ...] = BEFORE_KEXEC_COMMANDS
    memfd_size: str = "64M"
    reserve_mem: str = f"16M:2M:{RESERVE_MEM_NAME}"
    # run the drgn CLI with kho-inspect's plugin in n1 (vm/guest/scenario.py drgn_session)
    drgn_session: bool = False


@dataclass(frozen=True)
class StageCommands:
    """The kho-inspect commands of one stage, placeholders not yet expanded.

    ``inspect`` runs once debugfs is copied: in the guest and, at the ``--cores``
    pause, on the host with ``--qemu``. ``before_kexec`` runs in the guest after
    ``kexec -l`` loaded the next kernel, as the last thing before ``kexec -e``.
    """

    inspect: Tuple[str, ...]
    before_kexec: Tuple[str, ...] = ()


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

def _clean_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():
        if _OWNED.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def parse_size(text: str, option: str) -> int:
    """``64M``, ``4096K``, ``1G``, ``65536`` (bytes) in bytes.

    >>> parse_size("64M", "--memfd-size"), parse_size("4 KiB", "--memfd-size")
    (67108864, 4096)

    :raises LabError: for anything else.
    """
    m = _SIZE.fullmatch(text)
    if not m:
        raise LabError(f"{option} {text!r} is not a size: write it like 64M or 4096K.")
    shift = {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]
    return int(m.group(1)) << shift


def stage_names(opts: RunOptions) -> List[str]:
    """``n0`` .. ``n<hops>``."""
    return [f"n{i}" for i in range(opts.hops + 1)]


def parse_stage_append(items: Tuple[str, ...]) -> Dict[str, str]:
    """``("n1=reserve_mem=64M:4K:late", ...)`` as ``{"n1": "reserve_mem=64M:4K:late"}``;
    words given twice for a stage are joined in order.

    :raises LabError: an item is not ``nK=WORDS``.
    """
    out: Dict[str, str] = {}
    for item in items:
        stage, sep, words = item.partition("=")
        if not sep or not words.strip():
            raise LabError(f"--stage-append {item!r} is not STAGE=WORDS: write it like "
                           'n1="reserve_mem=64M:4K:late".')
        stage_index(stage.strip())
        name = stage.strip()
        out[name] = f"{out[name]} {words.strip()}" if name in out else words.strip()
    return out


def run_arch(opts: RunOptions) -> str:
    """The guest's architecture: ``--arch``, else the lab kernel's.

    :raises LabError: for an unknown kernel or architecture, or both contradicting.
    """
    if opts.kernel_dir is not None:
        lab_kernel(PLAIN, opts.arch)  # checks the architecture's name
        return opts.arch or DEFAULT_ARCH
    return lab_kernel(opts.kernel, opts.arch).arch


def _initramfs(opts: RunOptions) -> bool:
    """Whether the guest boots the lab's initramfs (no kho-inspect inside)."""
    return run_arch(opts) in INITRAMFS_ARCHES


def _validate(opts: RunOptions) -> int:
    """Check every option before anything is built; returns the guest's MiB."""
    if opts.hops < 0:
        raise LabError(f"--hops {opts.hops} is negative: give 0 or more kexecs.")
    run_arch(opts)
    if opts.kernel_dir and opts.kernel != PLAIN:
        raise LabError(f"--kernel {opts.kernel} and --kernel-dir both choose the kernel: "
                       "give one of them.")
    if opts.cpus < 1:
        raise LabError(f"--cpus {opts.cpus} must be at least 1.")
    if opts.numa < 0:
        raise LabError(f"--numa {opts.numa} must be 0 (no NUMA) or more nodes.")
    memfd = parse_size(opts.memfd_size, "--memfd-size")
    if memfd <= 0 or memfd % MEMFD_BLOCK:
        raise LabError(f"--memfd-size {opts.memfd_size} must be a positive multiple of 4 KiB.")
    stages = stage_names(opts)
    unknown = sorted(set(opts.stage_append) - set(stages))
    if unknown:
        raise LabError(f"--stage-append names {', '.join(unknown)}, but a run with --hops "
                       f"{opts.hops} has the stages {', '.join(stages)}.")
    for stage in stages:  # a bad placeholder stops the run here, not in the guest
        commands = stage_commands(opts, stage)
        expand(commands.inspect + commands.before_kexec, GUEST_OUT, stage)
    return parse_memory(opts.memory)


def kernel_share(kernel: Kernel) -> Tuple[Path, str, str]:
    """The directory to share for ``kernel`` and the guest paths of bzImage and vmlinux."""
    base = Path(os.path.commonpath([kernel.bzimage.parent, kernel.vmlinux.parent]))
    return (base, f"{GUEST_KERNEL}/{kernel.bzimage.relative_to(base)}",
            f"{GUEST_KERNEL}/{kernel.vmlinux.relative_to(base)}")


def kernel_cmdline(opts: RunOptions) -> str:
    """The command line every kernel of the run shares (n0 adds its ``stage_append``)."""
    # log_buf_len: with memblock=debug a KHO boot logs one line per preserved block
    # (16k lines, ~1.8 MB, for the memfd) before the console starts; the default 2 MB
    # buffer loses the early messages the verdicts look for ("Revived memory
    # reservation"). Not more: the buffer is a memblock allocation, and KHO sizes
    # its scratch areas from those (64M grew scratch from 740 MiB to 1.9 GiB).
    words = [f"console={MACHINES[run_arch(opts)].console}", "panic=-1", "log_buf_len=8M",
             "kho=on", "liveupdate=on", f"reserve_mem={opts.reserve_mem}"]
    if not _initramfs(opts):  # the 9p root filesystem and its bootstrap
        words += [kernel_cmdline_root(), f"init={BOOTSTRAP_PATH}"]
    if opts.kernel_dir is None:  # a lab kernel's own words, e.g. the broken variant's
        words += lab_kernel(opts.kernel, opts.arch).cmdline
    if opts.append.strip():
        words.append(opts.append.strip())
    return " ".join(words)


def expected_cmdline(opts: RunOptions, stage: str) -> str:
    """The command line ``stage`` must boot with: the shared one plus its own words."""
    return " ".join(w for w in (kernel_cmdline(opts), opts.stage_append.get(stage, "")) if w)


def stage_commands(opts: RunOptions, stage: str) -> StageCommands:
    """The commands of stage ``nK``: the list, the KHO-boot ones from n1 on, and the
    before-kexec ones in every stage that kexecs. Placeholders stay unexpanded.
    """
    index = stage_index(stage)
    inspect = opts.commands
    if index > 0:
        inspect += opts.kho_boot_commands
    before_kexec = opts.before_kexec_commands if index < opts.hops else ()
    if _initramfs(opts):  # all on the host, at the pause (after the next kernel loaded)
        return StageCommands(inspect=inspect + before_kexec)
    return StageCommands(inspect=inspect, before_kexec=before_kexec)


def _guest_config(opts: RunOptions, kernel: Kernel) -> Dict[str, Any]:
    _, bz, vml = kernel_share(kernel)
    stages = stage_names(opts)
    commands = {name: stage_commands(opts, name) for name in stages}
    return {"hops": opts.hops, "cores": opts.cores,
            "stage_commands": {name: expand(c.inspect, GUEST_OUT, name)
                               for name, c in commands.items()},
            "before_kexec_commands": {name: expand(c.before_kexec, GUEST_OUT, name)
                                      for name, c in commands.items()},
            "stage_append": {name: opts.stage_append.get(name, "") for name in stages},
            "bzImage": bz, "vmlinux": vml,
            "memfd_bytes": parse_size(opts.memfd_size, "--memfd-size"),
            "reserve_mem_name": opts.reserve_mem.rsplit(":", 1)[-1],
            "pause_timeout": opts.timeout, "drgn_session": opts.drgn_session}


def _initramfs_env(opts: RunOptions, image: str) -> str:
    """``lab.env`` of an initramfs guest (vm/guest/init-initramfs sources it): the hops,
    the memfd size, the files to kexec and every stage's command line."""
    lines = [f"HOPS={opts.hops}",
             f"MEMFD_BYTES={parse_size(opts.memfd_size, '--memfd-size')}",
             f"IMAGE={shlex.quote(image)}",
             f"INITRD={shlex.quote('/lab/initrd/' + INITRAMFS_NAME)}"]
    lines += [f"CMDLINE_{name}={shlex.quote(expected_cmdline(opts, name))}"
              for name in stage_names(opts)]
    return "\n".join(lines) + "\n"


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
    arch = run_arch(opts)
    initramfs = arch in INITRAMFS_ARCHES  # _initramfs(opts), decided once here
    if initramfs:
        opts.cores = True  # kho-inspect runs on the host only, at every stage's pause
    out = opts.out.resolve()
    _clean_out(out)
    timings: Dict[str, Any] = {}
    kernel = (kernel_from_dir(opts.kernel_dir, arch) if opts.kernel_dir
              else _timed(timings, "kernel_s", ensure_kernel, opts.kernel, False, None, False,
                          opts.arch))
    rootfs = _timed(timings, "rootfs_s", ensure_guest_root, arch)
    accel, why = _timed(timings, "accel_probe_s", choose_accel, opts.accel, kernel.bzimage,
                        arch)
    log.info("accelerator %s (%s)", accel, why)
    (out / "lab.json").write_text(json.dumps(_guest_config(opts, kernel), indent=2) + "\n")
    kdir, bz, _ = kernel_share(kernel)
    if initramfs:
        (out / "lab.env").write_text(_initramfs_env(opts, bz))
    with tempfile.TemporaryDirectory(prefix="kholab-") as tmp:
        shares = [Share(VM_TAG, vm_dir()), Share("khokernel", kdir),
                  Share("khoout", out, readonly=False)]
        if initramfs:
            shares.append(Share("khoinitrd", rootfs.path.parent))
        else:
            shares.append(Share(PACKAGE_TAG, package_dir()))
        spec = VmSpec(bzimage=kernel.bzimage,
                      rootfs=None if initramfs else rootfs.path,
                      initrd=rootfs.path if initramfs else None,
                      cmdline=expected_cmdline(opts, "n0"),
                      serial_log=out / "serial.log", qmp_socket=Path(tmp) / "qmp.sock",
                      inspect_socket=Path(tmp) / "inspect.sock",
                      memory_mib=memory_mib, cpus=opts.cpus, numa=opts.numa, accel=accel,
                      shares=tuple(shares), arch=arch)
        run = _Run(opts, kernel, spec.inspect_socket, timings=timings)
        _execute(run, spec)
    summary = _summary(run, spec, rootfs.path, why)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _execute(run: _Run, spec: VmSpec) -> None:
    argv = qemu_argv(spec)
    run.timings["qemu_argv"] = argv
    log.info("booting %s (%s, %d MiB, %d CPUs); serial log %s", run.kernel.bzimage, spec.accel,
             spec.memory_mib, spec.cpus, spec.serial_log)
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
        if _ECHO.search(line):
            guest_log.info("%s", line[line.find("KHO-LAB: ") + 9:] if m else line.strip())
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
        log.info("%s: dumping the guest to %s", stage_dir.name, stage_dir / "vmcore")
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
    if _initramfs(run.opts):
        stage = initramfs_stage(stage_dir)
        (stage_dir / "stage.json").write_text(json.dumps(stage, indent=2) + "\n")
    return info


def _host_commands(run: _Run, outdir: Path) -> Dict[str, int]:
    stage = outdir.parent.name
    commands = expand(stage_commands(run.opts, stage).inspect, run.opts.out.resolve(), stage,
                      results=outdir)
    argv = batch_argv(outdir, commands,
                      ["--qemu", str(run.inspect_socket), "--vmlinux", str(run.kernel.vmlinux)])
    # the same kho_inspect as this process, also when it runs from a checkout uninstalled
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(package_dir().parent), os.environ.get("PYTHONPATH", "")) if p))
    log.info("%s: running kho-inspect --qemu on the host", stage)
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=HOST_COMMANDS_TIMEOUT)
    except subprocess.TimeoutExpired:
        run.problems.append(f"{stage}: host-side kho-inspect --qemu did not finish "
                            f"within {HOST_COMMANDS_TIMEOUT} s")
        return {}
    records_path = outdir / "commands.json"
    if not records_path.is_file():
        run.problems.append(f"{stage}: host-side kho-inspect did not run: "
                            f"{proc.stderr.strip()[-300:]}")
        return {}
    return {r["command"]: r["exit_code"] for r in json.loads(records_path.read_text())}


def initramfs_stage(stage_dir: Path) -> Dict[str, Any]:
    """``stage.json`` of an initramfs guest's stage, from the files it left in
    ``stage_dir`` and the host's kho-inspect results (``host/``): the facts
    :func:`judge_stage` reads, as vm/guest/scenario.py writes them on x86."""
    def text(name: str) -> str:
        path = stage_dir / name
        return path.read_text(errors="replace") if path.is_file() else ""

    dmesg = text("dmesg.txt")
    memblock = read_json(stage_dir / "host" / "memblock.json") or {}
    name = RESERVE_MEM_NAME
    reserve: Dict[str, Any] = {
        "name": name, "revived": f"Revived memory reservation '{name}' from KHO" in dmesg}
    reserve.update(next(({"start": r["start"], "size": r["size"]}
                         for r in memblock.get("reserve_mem", []) if r.get("name") == name),
                        {}))
    test_kho = ("restore succeeded" if "test_kho: KHO restore succeeded" in dmesg else
                "restore failed" if "test_kho: KHO restore failed" in dmesg else
                "preserved" if (stage_dir / "kho" / "out" / "sub_fdts" / "kho_test").exists()
                else "absent")
    errors = [line for line in text("debugfs-errors.txt").splitlines() if line.strip()]
    result: Dict[str, Any] = {
        "stage": stage_dir.name, "index": stage_index(stage_dir.name), "errors": [],
        "debugfs_errors": errors, "release": text("release").strip(),
        "cmdline": text("cmdline").strip(),
        "kho_enabled": (stage_dir / "kho" / "out").is_dir(),
        "kho_boot": (stage_dir / "kho" / "in").is_dir(),
        "test_kho": test_kho, "reserve_mem": reserve,
        "hugepages": read_json(stage_dir / "hugepages.json") or {},
        "kho_warnings": len(re.findall(r"WARNING: .*kexec_handover", dmesg)),
        "commands": {}, "guest": "initramfs"}
    for key in ("memfd_in", "memfd_out"):
        found = read_json(stage_dir / f"{key}.json")
        if found is not None:
            result[key] = found
    if (stage_dir / "kexec_loaded").is_file():
        result["kexec_loaded"] = True
    return result


# --- verdicts -----------------------------------------------------------------------------

def expected_test_kho(index: int) -> str:
    """test_kho restores in every odd stage and preserves (again) in every even one."""
    return "restore succeeded" if index % 2 else "preserved"


def judge_stage(stage: Dict[str, Any], index: int, hops: int,
                cmdline: Optional[str] = None) -> List[str]:
    """Problems of one stage's ``stage.json`` (empty: verified); ``cmdline`` is the
    command line the stage must have booted with (not checked when ``None``)."""
    problems = [f"error: {e}" for e in stage.get("errors", [])]
    if cmdline is not None and " ".join(str(stage.get("cmdline")).split()) != cmdline:
        problems.append(f"booted with {stage.get('cmdline')!r}, expected {cmdline!r}")
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


def judge_run(out: Path, hops: int, cores: bool, host: Dict[str, Dict[str, Any]],
              cmdlines: Optional[Mapping[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """Per-stage summary entries with their verdicts (``cmdlines``: see :func:`judge_stage`)."""
    stages: Dict[str, Dict[str, Any]] = {}
    previous_reserve: Optional[Dict[str, Any]] = None
    for index in range(hops + 1):
        name = f"n{index}"
        stage = _load_stage(out, name)
        if stage is None:
            stages[name] = {"verified": False, "problems": ["the stage never ran"]}
            continue
        problems = judge_stage(stage, index, hops, (cmdlines or {}).get(name))
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
        "before_kexec": stage.get("before_kexec_commands", {}),
        "cmdline": stage.get("cmdline"),
        "host": host,
    }


def _summary(run: _Run, spec: VmSpec, rootfs: Path, accel_reason: str) -> Dict[str, Any]:
    opts = run.opts
    out = opts.out.resolve()
    stages = judge_run(out, opts.hops, opts.cores, run.host,
                       {name: expected_cmdline(opts, name) for name in stage_names(opts)})
    ok = not run.problems and all(s["verified"] for s in stages.values())
    commands_ok = all(code == 0 for s in stages.values()
                      for code in (*s["commands"].values(), *s["before_kexec"].values()))
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
        "lab_kernel": None if opts.kernel_dir else lab_kernel(opts.kernel).to_json(),
        "rootfs": str(rootfs),
        "accel": spec.accel,
        "accel_reason": accel_reason,
        "memory_mib": spec.memory_mib,
        "cpus": spec.cpus,
        "numa": spec.numa,
        "cmdline": spec.cmdline,
        "stage_append": dict(opts.stage_append),
        "memfd_bytes": parse_size(opts.memfd_size, "--memfd-size"),
        "cores": opts.cores,
        "commands": list(opts.commands),
        "qemu": argv,
        "timings": timings,
        "stages": stages,
    }

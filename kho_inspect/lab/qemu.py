# SPDX-License-Identifier: LGPL-2.1-or-later
"""
QEMU
----

Start the lab guest: ``qemu-system-x86_64 -kernel bzImage -append ...`` with
the root filesystem and the other directories shared over 9p, the serial
console in a file, ``-device vmcoreinfo`` and a QMP socket, so that drgn can
read the running guest (``kho-inspect --qemu SOCK``) and QMP can write a
kdump-compressed core (``dump-guest-memory``). An arm64 guest is
``qemu-system-aarch64 -M virt -cpu max`` under TCG with ``-kernel Image`` and an
initramfs (:data:`MACHINES`); its directories are shared over 9p the same way.

:class:`Qmp` is a minimal QMP client over the unix socket; :func:`choose_accel`
probes KVM with a short boot and falls back to TCG (on some hosts /dev/kvm
opens but guests hang while decompressing the kernel).
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kho_inspect.errors import LabError

__all__ = (
    "QEMU",
    "Machine",
    "MACHINES",
    "Share",
    "VmSpec",
    "parse_memory",
    "numa_args",
    "qemu_argv",
    "choose_accel",
    "probe_kvm",
    "Qmp",
    "DUMP_FORMATS",
)

QEMU = "qemu-system-x86_64"
ROOT_TAG = "kholabroot"
NINEP_OPTS = "trans=virtio,version=9p2000.L,msize=512000"
# Preferred dump formats, best first: all kdump-compressed (drgn reads them through
# libkdumpfile); an ELF dump would be the size of guest RAM.
DUMP_FORMATS = ("kdump-zlib", "kdump-lzo", "kdump-snappy")
_BOOTED = re.compile(r"Linux version \d")


@dataclass(frozen=True)
class Share:
    """A host directory shared into the guest over 9p under ``tag``."""

    tag: str
    path: Path
    readonly: bool = True

    def argv(self) -> List[str]:
        opts = [f"local,path={self.path}", f"mount_tag={self.tag}", "security_model=none",
                "multidevs=remap"]
        if self.readonly:
            opts.append("readonly=on")
        return ["-virtfs", ",".join(opts)]


@dataclass(frozen=True)
class Machine:
    """How QEMU emulates one architecture of the lab: the binary, the machine options
    under TCG, the serial console's name for the kernel, and whether KVM can run it
    on this (x86_64) host."""

    qemu: str
    tcg_argv: Tuple[str, ...]
    console: str
    kvm: bool


MACHINES: Dict[str, Machine] = {
    # 4-level paging keeps the guest like the common x86 server; TCG's "max" offers LA57.
    "x86_64": Machine(QEMU, ("-accel", "tcg", "-cpu", "max,la57=off"), "ttyS0", True),
    # The KHO selftest's machine (tools/testing/selftests/kho/arm64.conf); the
    # implementation-defined pointer authentication is much cheaper to emulate.
    "arm64": Machine("qemu-system-aarch64",
                     ("-M", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"),
                     "ttyAMA0", False),
}


@dataclass
class VmSpec:
    """Everything :func:`qemu_argv` needs to start the lab guest: a 9p root
    filesystem (``rootfs``) or an ``initrd``."""

    bzimage: Path  # the boot image: bzImage, or Image on arm64
    rootfs: Optional[Path]
    cmdline: str
    serial_log: Path
    qmp_socket: Path
    inspect_socket: Optional[Path] = None
    memory_mib: int = 6144
    cpus: int = 2
    numa: int = 0
    accel: str = "tcg"
    shares: Sequence[Share] = field(default_factory=tuple)
    arch: str = "x86_64"
    initrd: Optional[Path] = None


def parse_memory(text: str) -> int:
    """QEMU ``-m`` style sizes (``6G``, ``4096M``, ``4096``) in MiB.

    :raises LabError: for anything else.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([MGmg]?)i?[Bb]?\s*", text)
    if not m:
        raise LabError(f"--memory {text!r} is not a size: write it like 6G or 4096M.")
    value = int(m.group(1))
    return value * 1024 if m.group(2).upper() == "G" else value


def numa_args(memory_mib: int, cpus: int, nodes: int) -> List[str]:
    """``-object``/``-numa`` options splitting memory evenly and CPUs round-robin.

    :raises LabError: when the memory does not split into whole MiB per node.
    """
    if nodes <= 0:
        return []
    if memory_mib % nodes:
        raise LabError(f"{memory_mib} MiB does not split evenly into {nodes} NUMA nodes: "
                       "pick a --memory that does.")
    per = memory_mib // nodes
    argv: List[str] = []
    for node in range(nodes):
        argv += ["-object", f"memory-backend-ram,id=mem{node},size={per}M"]
        node_cpus = [c for c in range(cpus) if c % nodes == node]
        opt = f"node,nodeid={node},memdev=mem{node}"
        opt += "".join(f",cpus={c}" for c in node_cpus)
        argv += ["-numa", opt]
    return argv


def kernel_cmdline_root() -> str:
    """Command-line words that make the read-only 9p share the guest's root."""
    return f"root={ROOT_TAG} rootfstype=9p rootflags={NINEP_OPTS},cache=loose ro"


def _accel_argv(accel: str, arch: str = "x86_64") -> List[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return list(MACHINES[arch].tcg_argv)


def qemu_argv(spec: VmSpec) -> List[str]:
    """The full QEMU command line for ``spec``."""
    argv = [MACHINES[spec.arch].qemu, *_accel_argv(spec.accel, spec.arch),
            "-m", f"{spec.memory_mib}M",
            "-smp", str(spec.cpus), *numa_args(spec.memory_mib, spec.cpus, spec.numa),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{spec.serial_log}",
            "-kernel", str(spec.bzimage), "-append", spec.cmdline,
            "-device", "vmcoreinfo",
            "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]
    if spec.rootfs is not None:
        argv += Share(ROOT_TAG, spec.rootfs).argv()
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    if spec.inspect_socket is not None:
        # A QMP socket serves one client at a time: drgn (kho-inspect --qemu) gets its own.
        argv += ["-qmp", f"unix:{spec.inspect_socket},server=on,wait=off"]
    for share in spec.shares:
        argv += share.argv()
    return argv


# --- accelerator ----------------------------------------------------------------------------

def _kvm_usable() -> Tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable"
    return True, ""


def probe_kvm(bzimage: Path, timeout: float = 10.0) -> Tuple[bool, str]:
    """Boot ``bzImage`` under KVM until it prints its banner; ``(ok, reason)``."""
    ok, why = _kvm_usable()
    if not ok:
        return False, why
    with tempfile.TemporaryDirectory(prefix="kholab-probe-") as tmp:
        log = Path(tmp) / "serial.log"
        argv = [QEMU, *_accel_argv("kvm"), "-m", "256M", "-nodefaults", "-display", "none",
                "-no-reboot", "-serial", f"file:{log}", "-kernel", str(bzimage),
                "-append", "console=ttyS0 panic=-1"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            return _watch_probe(proc, log, timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _watch_probe(proc: "subprocess.Popen[bytes]", log: Path,
                 timeout: float) -> Tuple[bool, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and _BOOTED.search(log.read_text(errors="replace")):
            return True, "KVM guest booted"
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            return False, f"QEMU with KVM exited {proc.returncode}: {err[-200:]}"
        time.sleep(0.2)
    return False, f"a KVM guest printed no kernel banner within {timeout:.0f} s"


def choose_accel(requested: str, bzimage: Path, arch: str = "x86_64") -> Tuple[str, str]:
    """``(accel, reason)`` for ``--accel auto|kvm|tcg``.

    :raises LabError: ``kvm`` was requested and does not work.
    """
    if requested == "tcg":
        return "tcg", "requested"
    if not MACHINES[arch].kvm:
        if requested == "kvm":
            raise LabError(f"--accel kvm cannot run an {arch} guest on this host: use "
                           "--accel tcg or auto.")
        return "tcg", f"an {arch} guest on an x86_64 host"
    ok, why = probe_kvm(bzimage)
    if ok:
        return "kvm", why
    if requested == "kvm":
        raise LabError(f"--accel kvm does not work here ({why}): use --accel tcg or auto.")
    return "tcg", f"KVM unusable ({why})"


# --- QMP ------------------------------------------------------------------------------------

class Qmp:
    """A minimal synchronous QMP client (greeting, capabilities, execute)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.sock = _connect(path, timeout)
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> Dict[str, Any]:
        while True:
            line = self.file.readline()
            if not line:
                raise LabError(f"QEMU closed the QMP socket {self.path}.")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str, timeout: Optional[float] = 30.0, **args: Any) -> Any:
        """Run ``command`` and return its ``return`` value.

        :raises LabError: on a QMP error reply.
        """
        self.sock.settimeout(timeout)
        req: Dict[str, Any] = {"execute": command}
        if args:
            req["arguments"] = args
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise LabError(f"QMP {command} failed: {reply['error'].get('desc', reply)}.")
        return reply.get("return")

    def status(self) -> str:
        return str(self.execute("query-status").get("status", "unknown"))

    def dump_formats(self) -> List[str]:
        try:
            caps = self.execute("query-dump-guest-memory-capability")
        except LabError:
            return ["elf"]
        return list(caps.get("formats", ["elf"]))

    def dump(self, path: Path, timeout: float = 600.0) -> str:
        """Write a core of the guest to ``path``; returns the format used."""
        available = self.dump_formats()
        fmt = next((f for f in DUMP_FORMATS if f in available), "elf")
        self.execute("dump-guest-memory", timeout=timeout, paging=False,
                     protocol=f"file:{path}", format=fmt)
        return fmt

    def quit(self) -> None:
        with contextlib.suppress(LabError, OSError):
            self.execute("quit", timeout=5)

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def _connect(path: Path, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError as e:
            sock.close()
            if time.monotonic() > deadline:
                raise LabError(f"Cannot connect to QEMU's QMP socket {path}: {e.strerror}.") \
                    from e
            time.sleep(0.1)

"""
Targets
-------

The ``kho_inspect.target`` module opens a :class:`drgn.Program` for the live
kernel (``/proc/kcore``), a core file (vmcore, ELF or kdump-compressed dump,
QEMU ``dump-guest-memory``) or a running QEMU guest (QMP), and loads the
kernel's debug info. Every failure becomes one :class:`TargetError` or
:class:`DebugInfoError` sentence that says what is wrong and what to do.

Programs are cached per ``(core, qemu, vmlinux)`` within a process, so a batch
of commands (the lab runs several per kernel) loads debug info once.

It also answers the questions every walker asks of an opened program:
:func:`kernel_release`, :func:`byteorder` and :func:`find_variable`.
"""

import errno
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import drgn

from kho_inspect import kdump
from kho_inspect.errors import DebugInfoError, TargetError

__all__ = (
    "TargetSpec",
    "open_program",
    "clear_cache",
    "debug_info_candidates",
    "elf_build_id",
    "kernel_build_id",
    "kernel_release",
    "byteorder",
    "find_variable",
    "LIVE_PATHS",
)


@dataclass(frozen=True)
class TargetSpec:
    """What to open: a core file, a QMP socket, or (neither) the live kernel."""

    core: Optional[str] = None
    qemu: Optional[str] = None
    vmlinux: Optional[str] = None

    def describe(self) -> str:
        if self.core:
            return f"core file {self.core}"
        if self.qemu:
            return f"QEMU guest at {self.qemu}"
        return "the live kernel"


# Paths the live-kernel checks look at; tests point them elsewhere.
LIVE_PATHS = {
    "kcore": "/proc/kcore",
    "lockdown": "/sys/kernel/security/lockdown",
}

_CACHE: Dict[TargetSpec, drgn.Program] = {}


def clear_cache() -> None:
    """Forget every cached program."""
    _CACHE.clear()


def open_program(spec: TargetSpec) -> drgn.Program:
    """Open (or return the cached) program for ``spec``, with debug info loaded.

    :raises TargetError: the target cannot be opened.
    :raises DebugInfoError: no matching vmlinux debug info was found.
    """
    try:
        return _CACHE[spec]
    except KeyError:
        pass
    if spec.core:
        prog = open_core(spec.core)
    else:
        prog = drgn.Program()
        if spec.qemu:
            _attach_qemu(prog, spec.qemu)
        else:
            _attach_live(prog)
    load_kernel_debug_info(prog, spec.vmlinux)
    _CACHE[spec] = prog
    return prog


def _lockdown_mode() -> Optional[str]:
    try:
        with open(LIVE_PATHS["lockdown"]) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def _attach_live(prog: drgn.Program) -> None:
    if os.geteuid() != 0:
        raise TargetError(
            "Reading the live kernel needs root (it opens /proc/kcore): run kho-inspect "
            "with sudo, or inspect a dump with --core."
        )
    kcore = LIVE_PATHS["kcore"]
    if not os.path.exists(kcore):
        raise TargetError(
            f"{kcore} does not exist (kernel built without CONFIG_PROC_KCORE or /proc not "
            "mounted): mount /proc, or inspect a dump with --core or a guest with --qemu."
        )
    try:
        with open(kcore, "rb"):
            pass
    except OSError as e:
        mode = _lockdown_mode()
        if e.errno == errno.EPERM and mode and mode != "none":
            raise TargetError(
                f"The kernel is locked down ({mode}) and refuses {kcore}: boot with "
                "lockdown=none (or without Secure Boot lockdown), or inspect a dump with --core."
            ) from e
        raise TargetError(f"Cannot open {kcore}: {e.strerror}; run as root.") from e
    try:
        prog.set_kernel()
    except (OSError, ValueError) as e:
        raise TargetError(f"drgn cannot attach to the live kernel: {e}.") from e


_NOT_A_DUMP = ("give a vmcore, an ELF or kdump-compressed dump with vmcoreinfo, or a QEMU "
               "dump-guest-memory file")
# utsname.machine -> drgn architecture, for kdump files libkdumpfile cannot place.
_ARCHES = {"x86_64": "X86_64", "aarch64": "AARCH64", "ppc64le": "PPC64", "ppc64": "PPC64",
           "s390x": "S390X", "riscv64": "RISCV64", "arm": "ARM", "i386": "I386"}


def open_core(path: str) -> drgn.Program:
    """A program for the kernel dump at ``path``.

    :raises TargetError: the file is missing, flattened, or not a kernel dump.
    """
    if not os.path.exists(path):
        raise TargetError(f"Core file {path} does not exist: check the path given to --core.")
    if kdump.is_flattened(Path(path)):
        raise TargetError(
            f"{path} is a flattened kdump file (makedumpfile -F, QEMU before 8.2), which drgn "
            "cannot read: convert it with makedumpfile -R or python3 -m kho_inspect.kdump."
        )
    prog = drgn.Program()
    try:
        prog.set_core_dump(path)
    except (OSError, ValueError, drgn.FaultError) as e:
        raise TargetError(f"{path} is not a kernel dump drgn can read ({e}): {_NOT_A_DUMP}.") \
            from e
    except Exception as e:  # libkdumpfile's errors are plain Exceptions
        prog = _open_kdump_with_hints(path, e)
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise TargetError(
            f"{path} is a core dump but not of a Linux kernel (it has no vmcoreinfo): give a "
            "vmcore, or a QEMU dump taken with -device vmcoreinfo."
        )
    return prog


def _open_kdump_with_hints(path: str, error: Exception) -> drgn.Program:
    # libkdumpfile cannot always find the architecture of a kdump file (QEMU's
    # dump-guest-memory cores: "KDUMP_ATTR_ARCH_NAME: Key has no value"); given
    # the platform and vmcoreinfo up front, drgn sets them before opening it.
    header = kdump.read_header(path)
    arch = _ARCHES.get(header.machine) if header else None
    if header is None or arch is None or not header.vmcoreinfo:
        raise TargetError(f"{path} is not a kernel dump drgn can read ({error}): "
                          f"{_NOT_A_DUMP}.") from error
    prog = drgn.Program(drgn.Platform(getattr(drgn.Architecture, arch)),
                        vmcoreinfo=header.vmcoreinfo)
    try:
        prog.set_core_dump(path)
    except Exception as e:  # libkdumpfile's errors are plain Exceptions
        raise TargetError(f"{path} is not a kernel dump drgn can read ({e}): "
                          f"{_NOT_A_DUMP}.") from e
    return prog


def _attach_qemu(prog: drgn.Program, sock: str) -> None:
    try:
        prog.set_qemu_qmp(sock)
    except (OSError, ValueError) as e:
        raise TargetError(
            f"Cannot attach to the QEMU guest at {sock} ({e}): start QEMU with "
            f"-qmp unix:{sock},server=on,wait=off -device vmcoreinfo."
        ) from e
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise TargetError(
            f"The QEMU guest at {sock} published no vmcoreinfo: run QEMU with -device "
            "vmcoreinfo and a guest kernel with CONFIG_FW_CFG_SYSFS=y."
        )


def debug_info_candidates(release: str) -> List[str]:
    """The usual places of a kernel's vmlinux with debug info, most specific first."""
    cache = os.path.expanduser("~/.cache/kho-inspect")
    return [
        f"/usr/lib/debug/boot/vmlinux-{release}",
        f"/usr/lib/debug/lib/modules/{release}/vmlinux",
        f"/boot/vmlinux-{release}",
        f"/lib/modules/{release}/build/vmlinux",
        f"/lib/modules/{release}/vmlinux",
        os.path.join(cache, "vmlinux", release, "vmlinux"),
        "vmlinux",
    ]


def elf_build_id(path: str) -> Optional[bytes]:
    """The GNU build ID of an ELF file, or ``None``.

    Only the section headers and the notes are read, so this is cheap even on
    a 300 MB vmlinux.
    """
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF" or ident[4] != 2:
                return None
            endian = "<" if ident[5] == 1 else ">"
            shoff, = struct.unpack_from(endian + "Q", ident, 0x28)
            shentsize, shnum = struct.unpack_from(endian + "HH", ident, 0x3A)
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            for i in range(shnum):
                sh_type, = struct.unpack_from(endian + "I", table, i * shentsize + 4)
                if sh_type != 7:  # SHT_NOTE
                    continue
                off, size = struct.unpack_from(endian + "QQ", table, i * shentsize + 0x18)
                f.seek(off)
                found = _build_id_from_notes(f.read(size), endian)
                if found:
                    return found
    except (OSError, struct.error):
        return None
    return None


def _build_id_from_notes(notes: bytes, endian: str) -> Optional[bytes]:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from(endian + "III", notes, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        if ntype == 3 and notes[name_start:name_start + namesz].rstrip(b"\0") == b"GNU":
            return notes[desc_start:desc_start + descsz]
        pos = desc_start + ((descsz + 3) & ~3)
    return None


def kernel_build_id(prog: drgn.Program) -> Optional[bytes]:
    """The build ID the target kernel reports in its vmcoreinfo, if any."""
    try:
        info = prog["VMCOREINFO"].string_().decode()
    except (LookupError, drgn.FaultError, ValueError):
        return None
    for line in info.splitlines():
        if line.startswith("BUILD-ID="):
            return bytes.fromhex(line.split("=", 1)[1].strip())
    return None


def _try_load(prog: drgn.Program, paths: Iterable[str]) -> bool:
    try:
        prog.load_debug_info(list(paths), main=True)
    except drgn.MissingDebugInfoError:
        return False
    return True


def load_kernel_debug_info(prog: drgn.Program, vmlinux: Optional[str]) -> None:
    """Load vmlinux debug info from ``vmlinux`` or the usual places.

    :raises DebugInfoError: with the reason (not found, no DWARF, wrong build).
    """
    release = kernel_release(prog) or platform.release()
    if vmlinux:
        if not os.path.exists(vmlinux):
            raise DebugInfoError(f"{vmlinux} does not exist: check the path given to --vmlinux.")
        if _try_load(prog, [vmlinux]):
            return
        raise DebugInfoError(_explain_unusable(prog, vmlinux, release))
    existing = [p for p in debug_info_candidates(release) if os.path.exists(p)]
    if _try_load(prog, existing):
        return
    raise DebugInfoError(
        f"No debug info found for kernel {release}: pass --vmlinux PATH to the vmlinux with "
        "DWARF that belongs to it (Debian: install the linux-image-*-dbg package)."
    )


def _explain_unusable(prog: drgn.Program, vmlinux: str, release: str) -> str:
    file_id = elf_build_id(vmlinux)
    kernel_id = kernel_build_id(prog)
    if file_id and kernel_id and file_id != kernel_id:
        return (
            f"{vmlinux} does not match the target kernel {release} (build ID {file_id.hex()} "
            f"!= {kernel_id.hex()}): pass the vmlinux built together with this kernel."
        )
    return (
        f"{vmlinux} has no usable debug info for kernel {release}: pass a vmlinux built with "
        "CONFIG_DEBUG_INFO (not a stripped or compressed image)."
    )


# --- questions about an opened program --------------------------------------


def kernel_release(prog: drgn.Program) -> Optional[str]:
    """The target's ``UTS_RELEASE`` (from vmcoreinfo), or ``None`` if unknown."""
    try:
        return prog["UTS_RELEASE"].string_().decode(errors="replace")
    except (LookupError, drgn.FaultError, ValueError):
        return None


def byteorder(prog: drgn.Program) -> str:
    """``"little"`` or ``"big"``: the byte order of the target's integers."""
    little = prog.platform is None or prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN
    return "little" if little else "big"


def find_variable(prog: drgn.Program, names: Iterable[str],
                  filename: Optional[str] = None) -> Tuple[str, drgn.Object]:
    """The first of ``names`` that exists, looked up in ``filename`` first.

    Static variables are ambiguous without their file; a synthetic or stripped
    program may only know them globally, hence the fallback.

    :return: the name found and its object.
    :raises LookupError: none exists.
    """
    names = tuple(names)
    for name in names:
        for where in ((filename,) if filename else ()) + (None,):
            try:
                return name, (prog.variable(name, where) if where else prog.variable(name))
            except LookupError:
                continue
    raise LookupError(f"none of {', '.join(names)} exists")

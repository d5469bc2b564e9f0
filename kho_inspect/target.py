# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Targets
-------

The ``kho_inspect.target`` module opens a :class:`drgn.Program` for the live
kernel (``/proc/kcore``), a core file (vmcore, ELF or kdump-compressed dump,
QEMU ``dump-guest-memory``) or a running QEMU guest (QMP), and loads the
kernel's debug info. Every failure becomes one :class:`TargetError` or
:class:`DebugInfoError` sentence that says what is wrong and what to do, with
the path and the keyword (``core``, ``qemu``, ``vmlinux``) as data. Input
files are looked at before drgn opens them, so that a directory, an empty,
compressed or truncated file, or a vmlinux given as a dump (or the reverse)
is named as such (:mod:`kho_inspect.kdump` reads the headers).

Programs are cached per ``(core, qemu, vmlinux)`` within a process, so a batch
of commands (the lab runs several per kernel) loads debug info once.

It also answers the questions every walker asks of an opened program:
:func:`kernel_release`, :func:`byteorder` and :func:`find_variable`, and the
few kernel helpers several walkers share (:func:`page0`,
:func:`direct_map_phys`, :func:`node_ids`, :func:`online_pgdats`,
:func:`kernel_config`). These compute what drgn's helpers of the same purpose
compute (``pfn_to_page``, ``virt_to_phys``, ``for_each_node_state``,
``for_each_online_pgdat``, ``get_kconfig`` in drgn 0.3.0); the walkers do not
import ``drgn.helpers.linux`` because that package imports every one of its
modules (and drgn's CLI) when any of them is first imported, which costs about
a third of drgn's whole load of a vmcore (bench/bench_check.py).
"""

import contextlib
import errno
import fnmatch
import gzip
import importlib.machinery
import os
import platform
import stat
import sys
from types import MappingProxyType
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Type

import drgn

from kho_inspect import kdump
from kho_inspect.errors import DebugInfoError, KhoInspectError, TargetError, TruncatedDumpError
from kho_inspect.frozen import frozen

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
    "page0",
    "direct_map_phys",
    "node_ids",
    "online_pgdats",
    "kernel_config",
    "LIVE_PATHS",
    "COMMAND_PLUGINS",
)


@frozen
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
    with _without_command_plugins():
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


COMMAND_PLUGINS = ("builtin_commands", "crash_commands", "kho_inspect")
"""drgn plugins that only add commands to drgn's own prompt (drgn's built-in and
crash commands, and kho-inspect's own): they hook nothing into a program, so a
program opened here does without them. Importing them costs about a third of
drgn's whole load of a vmcore (bench/bench_check.py)."""


@contextlib.contextmanager
def _without_command_plugins() -> Iterator[None]:
    """Leave :data:`COMMAND_PLUGINS` out of drgn's plugins, if drgn loads them now.

    drgn loads its plugins once per process, when the first program gets a
    target, and honours ``DRGN_DISABLE_PLUGINS`` (glob patterns, ``,``-separated)
    then; the user's own value is kept and extended, and plugins asked for by
    name with ``DRGN_PLUGINS`` still load. When no installed plugin is left
    (:func:`_other_plugins`), the value is ``*``, with which drgn loads the same
    plugins, none, without importing :mod:`importlib.metadata` to list them
    (about 15 ms, bench/bench_check.py).
    """
    old = os.environ.get("DRGN_DISABLE_PLUGINS")
    if old == "*":
        yield
        return
    disabled = [p for p in (old or "").split(",") if p] + list(COMMAND_PLUGINS)
    os.environ["DRGN_DISABLE_PLUGINS"] = \
        ",".join(disabled) if _other_plugins(disabled) else "*"
    try:
        yield
    finally:
        if old is None:
            del os.environ["DRGN_DISABLE_PLUGINS"]
        else:
            os.environ["DRGN_DISABLE_PLUGINS"] = old


def _other_plugins(disabled: List[str]) -> bool:
    """Whether drgn may find a plugin entry point that no pattern of
    ``disabled`` matches (``True`` when unsure).

    drgn lists the ``drgn.plugins`` entry points of the installed
    distributions with :mod:`importlib.metadata`: the ``entry_points.txt`` of
    each ``*.dist-info`` and ``*.egg-info`` directory on :data:`sys.path`.
    Those are read here directly; a path entry that is a file (a zip or an
    egg) or a finder other than :class:`importlib.machinery.PathFinder` that
    lists distributions makes the answer "unsure".
    """
    if any(getattr(finder, "find_distributions", None) is not None
           and finder is not importlib.machinery.PathFinder for finder in sys.meta_path):
        return True
    for entry in sys.path:
        try:
            children = os.scandir(entry or ".")
        except NotADirectoryError:
            return True
        except OSError:
            continue  # missing: importlib.metadata finds nothing there either
        with children:
            for child in children:
                name = child.name.lower()  # as importlib.metadata matches them
                if name.endswith(".egg"):
                    return True  # an unzipped egg: EGG-INFO/ inside, not read here
                if name.endswith((".dist-info", ".egg-info")) and any(
                        not any(fnmatch.fnmatch(name, p) for p in disabled)
                        for name in _plugin_names(child.path)):
                    return True
    return False


def _plugin_names(info_dir: str) -> List[str]:
    """The names in the ``[drgn.plugins]`` section of ``info_dir/entry_points.txt``."""
    try:
        with open(os.path.join(info_dir, "entry_points.txt"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    names: List[str] = []
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == "drgn.plugins" and "=" in line and not line.startswith(("#", ";")):
            names.append(line.partition("=")[0].strip())
    return names


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
            "Reading the live kernel needs root (it opens /proc/kcore)",
            "run as root (sudo), or inspect a dump with {alternatives}", alternatives=("core",))
    kcore = LIVE_PATHS["kcore"]
    if not os.path.exists(kcore):
        raise TargetError(
            f"{kcore} does not exist (kernel built without CONFIG_PROC_KCORE or /proc not "
            "mounted)", "mount /proc, or inspect a dump with {alternatives}",
            alternatives=("core", "qemu"), path=kcore)
    try:
        with open(kcore, "rb"):
            pass
    except OSError as e:
        mode = _lockdown_mode()
        if e.errno == errno.EPERM and mode and mode != "none":
            raise TargetError(
                f"The kernel is locked down ({mode}) and refuses {kcore}",
                "boot with lockdown=none (or without Secure Boot lockdown), or inspect a dump "
                "with {alternatives}", alternatives=("core",), path=kcore) from e
        raise TargetError(f"Cannot open {kcore} ({e.strerror})", "run as root",
                          path=kcore) from e
    try:
        prog.set_kernel()
    except (OSError, ValueError) as e:
        raise TargetError(f"drgn cannot attach to the live kernel ({e})") from e


# --- input files ----------------------------------------------------------------

_FILE_TYPES = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
               (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
               (stat.S_ISBLK, "block device"), (stat.S_ISREG, "regular file"))


def _file_type(mode: int) -> str:
    return next((name for test, name in _FILE_TYPES if test(mode)), "special file")


def _stat(path: str, given: str, error: Type[KhoInspectError]) -> os.stat_result:
    """``os.stat(path)`` of the input given as ``given``, or ``error`` saying why not."""
    try:
        return os.stat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise error(f"{path} does not exist", "check the path given to {given}",
                        given=given, path=path) from e
        advice = _ACCESS_ADVICE if e.errno == errno.EACCES else "check the path given to {given}"
        raise error(f"Cannot reach {path} ({e.strerror})", advice, given=given, path=path) from e


_ACCESS_ADVICE = "run as a user who may read it (sudo), or change its mode"


def _directory_error(path: str, given: str, error: Type[KhoInspectError],
                     wanted: Tuple[str, ...]) -> KhoInspectError:
    """Refuse a directory, naming the files in it that look like what was ``wanted``."""
    try:
        found = sorted(n for n in os.listdir(path)
                       if n.startswith(wanted) and os.path.isfile(os.path.join(path, n)))
    except OSError:
        found = []
    advice = "give the path of the file itself to {given}"
    if found:
        advice = f"give the file itself, such as {os.path.join(path, found[0])}, to {{given}}"
    return error(f"{path} is a directory, not a file", advice, given=given, path=path,
                 available=found or None)


def _probe(path: str, given: str, error: Type[KhoInspectError],
           wanted: Tuple[str, ...]) -> Tuple[bytes, Optional[int]]:
    """The first bytes of the input file ``path`` and its size (``None``: a block device).

    :param wanted: name prefixes to look for when ``path`` is a directory.
    :raises error: the file is missing, a directory or other non-file, or unreadable.
    """
    st = _stat(path, given, error)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise _directory_error(path, given, error, wanted)
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise error(f"{path} is a {_file_type(mode)}, not a file",
                    "give the path of a file to {given}", given=given, path=path)
    try:
        with open(path, "rb") as f:
            head = f.read(kdump.SNIFF_SIZE)
    except OSError as e:
        raise error(f"Cannot read {path} ({e.strerror})", _ACCESS_ADVICE,
                    given=given, path=path) from e
    return head, st.st_size if stat.S_ISREG(mode) else None


_DECOMPRESSORS = {"gzip": "gunzip", "xz": "unxz", "zstd": "unzstd", "bzip2": "bunzip2",
                  "lz4": "unlz4"}


def _refuse_kind(path: str, kind: str, given: str, error: Type[KhoInspectError]) -> None:
    """Refuse the kinds of file that are never what ``given`` wants, whatever it wants."""
    if kind == "empty":
        raise error(f"{path} is empty (0 bytes: nothing was ever written to it)",
                    "give a complete file to {given}", given=given, path=path)
    if kind in _DECOMPRESSORS:
        raise error(f"{path} is {kdump.KINDS[kind]}",
                    f"decompress it first ({_DECOMPRESSORS[kind]}) and give the result to "
                    "{given}", given=given, path=path)


# --- core files ---------------------------------------------------------------

_NOT_A_DUMP = ("give a vmcore, an ELF or kdump-compressed dump with vmcoreinfo, or a QEMU "
               "dump-guest-memory file")
_DUMP_KINDS = ("elf-core", "kdump", "unknown")
_DUMP_NAMES = ("vmcore", "core", "dump")
# utsname.machine -> drgn architecture, for kdump files libkdumpfile cannot place.
_ARCHES = {"x86_64": "X86_64", "aarch64": "AARCH64", "ppc64le": "PPC64", "ppc64": "PPC64",
           "s390x": "S390X", "riscv64": "RISCV64", "arm": "ARM", "i386": "I386"}


def _check_core(path: str) -> str:
    """The kind of the core file at ``path`` (see :data:`kdump.KINDS`), if it may be one.

    :raises TargetError: it is not a dump, or it is cut short.
    """
    head, size = _probe(path, "core", TargetError, _DUMP_NAMES)
    kind = kdump.file_kind(head)
    _refuse_kind(path, kind, "core", TargetError)
    if kind == "flattened":
        raise TargetError(
            f"{path} is a flattened kdump file (makedumpfile -F, QEMU before 8.2), which drgn "
            "cannot read", "convert it with makedumpfile -R or python3 -m kho_inspect.kdump",
            path=path)
    if kind == "elf-executable":
        raise TargetError(f"{path} is {kdump.KINDS[kind]}, not a kernel dump",
                          "give it to {vmlinux} and the dump to {core}", given="core",
                          path=path)
    if kind not in _DUMP_KINDS:
        raise TargetError(f"{path} is {kdump.KINDS[kind]}, not a kernel dump", _NOT_A_DUMP,
                          given="core", path=path)
    if size is not None:
        _refuse_truncated(path, size)
    return kind


def _refuse_truncated(path: str, size: int) -> None:
    with open(path, "rb") as f:
        described = kdump.described_size(f)
    if described is None or size >= described.size:
        return
    at_least = "" if described.exact else "at least "
    raise TruncatedDumpError(
        f"{path} is truncated: {size} of {at_least}{described.size} bytes (it was cut short "
        "while it was written or copied)", "take or copy the dump again",
        given="core", path=path, size=size, expected=described.size)


def open_core(path: str) -> drgn.Program:
    """A program for the kernel dump at ``path``.

    :raises TargetError: the file is missing, unreadable, truncated, flattened, or not a
        kernel dump.
    """
    kind = _check_core(path)
    prog = drgn.Program()
    try:
        prog.set_core_dump(path)
    except (OSError, ValueError, drgn.FaultError) as e:
        raise _unreadable_dump(path, kind, e) from e
    except Exception as e:  # libkdumpfile's errors are plain Exceptions
        prog = _open_kdump_with_hints(path, kind, e)
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise TargetError(
            f"{path} is a core dump but not of a Linux kernel (it has no vmcoreinfo)",
            "give a vmcore, or a QEMU dump taken with -device vmcoreinfo",
            given="core", path=path)
    return prog


def _unreadable_dump(path: str, kind: str, error: Exception) -> TargetError:
    # drgn's reason for a file of no format it knows says nothing more than ours
    if kind == "unknown" and str(error) == "not an ELF core file":
        return TargetError(f"{path} is not a kernel dump ({kdump.KINDS[kind]})", _NOT_A_DUMP,
                           given="core", path=path)
    return TargetError(f"{path} is not a kernel dump drgn can read ({error})", _NOT_A_DUMP,
                       given="core", path=path)


def _open_kdump_with_hints(path: str, kind: str, error: Exception) -> drgn.Program:
    # libkdumpfile cannot always find the architecture of a kdump file (QEMU's
    # dump-guest-memory cores: "KDUMP_ATTR_ARCH_NAME: Key has no value"); given
    # the platform and vmcoreinfo up front, drgn sets them before opening it.
    header = kdump.read_header(path)
    arch = _ARCHES.get(header.machine) if header else None
    if header is None or arch is None or not header.vmcoreinfo:
        raise _unreadable_dump(path, kind, error) from error
    try:
        prog = drgn.Program(drgn.Platform(getattr(drgn.Architecture, arch)),
                            vmcoreinfo=header.vmcoreinfo)
        prog.set_core_dump(path)
    except Exception as e:  # libkdumpfile's errors are plain Exceptions
        raise _unreadable_dump(path, kind, e) from e
    return prog


# --- QEMU -----------------------------------------------------------------------


def _qmp_advice(sock: str) -> str:
    return f"start QEMU with -qmp unix:{sock},server=on,wait=off -device vmcoreinfo"


def _check_qmp_socket(sock: str) -> None:
    """:raises TargetError: ``sock`` does not exist or is not a socket."""
    try:
        mode = os.stat(sock).st_mode
    except FileNotFoundError as e:
        raise TargetError(f"The QMP socket {sock} does not exist", _qmp_advice(sock),
                          given="qemu", path=sock) from e
    except OSError as e:
        raise TargetError(f"Cannot reach {sock} ({e.strerror})", _ACCESS_ADVICE,
                          given="qemu", path=sock) from e
    if not stat.S_ISSOCK(mode):
        raise TargetError(
            f"{sock} is a {_file_type(mode)}, not a socket",
            "give the socket of QEMU's -qmp unix:PATH,server=on,wait=off to {given}",
            given="qemu", path=sock)


def _attach_qemu(prog: drgn.Program, sock: str) -> None:
    _check_qmp_socket(sock)
    try:
        prog.set_qemu_qmp(sock)
    except (OSError, ValueError) as e:
        raise _qmp_error(sock, e) from e
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise TargetError(
            f"The QEMU guest at {sock} published no vmcoreinfo",
            "run QEMU with -device vmcoreinfo and a guest kernel with CONFIG_FW_CFG_SYSFS=y",
            given="qemu", path=sock)


def _qmp_error(sock: str, error: Exception) -> TargetError:
    code = getattr(error, "errno", None)
    if code == errno.ECONNREFUSED:
        return TargetError(f"Nothing listens on the QMP socket {sock} (has QEMU exited?)",
                           _qmp_advice(sock), given="qemu", path=sock)
    if code in (errno.EACCES, errno.EPERM):
        return TargetError(f"Cannot connect to the QMP socket {sock} (permission denied)",
                           "run as root or as the user that started QEMU",
                           given="qemu", path=sock)
    return TargetError(f"Cannot attach to the QEMU guest at {sock} ({error})",
                       _qmp_advice(sock), given="qemu", path=sock)


# --- debug info -----------------------------------------------------------------


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
    """The GNU build ID of an ELF file, or ``None`` (see :func:`kdump.elf_build_id`)."""
    return kdump.elf_build_id(path)


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


def _check_vmlinux(path: str) -> None:
    """:raises DebugInfoError: ``path`` cannot be a vmlinux (missing, not ELF, a dump...)."""
    head, _size = _probe(path, "vmlinux", DebugInfoError, ("vmlinux",))
    kind = kdump.file_kind(head)
    _refuse_kind(path, kind, "vmlinux", DebugInfoError)
    if kind in ("elf-core", "kdump", "flattened"):
        raise DebugInfoError(f"{path} is {kdump.KINDS[kind]}, not a vmlinux",
                             "give it to {core} and the vmlinux of that kernel to {vmlinux}",
                             given="vmlinux", path=path)
    if not kind.startswith("elf-"):
        what = (f"{path} is {kdump.KINDS[kind]}, which has no debug info" if kind == "bzimage"
                else f"{path} is not an ELF file")
        raise DebugInfoError(what, "give the vmlinux of the same build (an ELF file with DWARF) "
                             "to {vmlinux}", given="vmlinux", path=path)


def load_kernel_debug_info(prog: drgn.Program, vmlinux: Optional[str]) -> None:
    """Load vmlinux debug info from ``vmlinux`` or the usual places.

    :raises DebugInfoError: with the reason (not found, no DWARF, wrong build).
    """
    release = kernel_release(prog) or platform.release()
    if vmlinux:
        _check_vmlinux(vmlinux)
        if _try_load(prog, [vmlinux]):
            return
        raise _unusable(prog, vmlinux, release, given=True)
    existing = [p for p in debug_info_candidates(release) if os.path.isfile(p)]
    if _try_load(prog, existing):
        return
    for path in existing:
        error = _unusable(prog, path, release, given=False)
        if error.build_id:
            raise error
    raise DebugInfoError(
        f"No debug info found for kernel {release}",
        "pass {alternatives} to the vmlinux with DWARF that belongs to it (Debian: install the "
        "linux-image-*-dbg package)", alternatives=("vmlinux",), release=release)


def _unusable(prog: drgn.Program, vmlinux: str, release: str, given: bool) -> DebugInfoError:
    """Why ``vmlinux`` gave no debug info for the target; ``build_id`` set on a mismatch."""
    file_id = elf_build_id(vmlinux)
    kernel_id = kernel_build_id(prog)
    found = "" if given else "The vmlinux found at "
    if file_id and kernel_id and file_id != kernel_id:
        return DebugInfoError(
            f"{found}{vmlinux} does not match the target kernel {release} (build ID "
            f"{file_id.hex()} != {kernel_id.hex()})",
            "pass the vmlinux built together with this kernel"
            + ("" if given else " as {alternatives}"),
            alternatives=() if given else ("vmlinux",), path=vmlinux, release=release,
            build_id=file_id, kernel_build_id=kernel_id)
    return DebugInfoError(
        f"{found}{vmlinux} has no usable debug info for kernel {release}",
        "pass a vmlinux built with CONFIG_DEBUG_INFO (not a stripped or compressed image)"
        + ("" if given else " as {alternatives}"),
        alternatives=() if given else ("vmlinux",), path=vmlinux, release=release)


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


def page0(prog: drgn.Program) -> int:
    """The address of the ``struct page`` of pfn 0 (``pfn_to_page(0)``): ``vmemmap``
    with ``CONFIG_SPARSEMEM_VMEMMAP``, else ``mem_map - ARCH_PFN_OFFSET`` (flat
    memory; classic sparsemem has no single array, as for drgn's helper).

    :raises LookupError: neither exists.
    """
    try:
        return prog["vmemmap"].value_()
    except KeyError:
        return (prog["mem_map"] - prog["ARCH_PFN_OFFSET"]).value_()


def direct_map_phys(prog: drgn.Program, virt: int) -> int:
    """The physical address of the direct-map address ``virt`` (``__pa()``).

    :raises Exception: drgn cannot find the direct map of this program (it
        raises a bare ``Exception``, as its ``virt_to_phys()`` does).
    """
    try:
        # What drgn's virt_to_phys() subtracts (drgn/helpers/linux/mm.py).
        from _drgn import _linux_helper_direct_mapping_offset as offset
    except ImportError:  # a drgn that moved it: its helper, at its import cost
        from drgn.helpers.linux.mm import virt_to_phys

        return virt_to_phys(prog, virt).value_()
    return drgn.Object(prog, "unsigned long", virt - offset(prog)).value_()


def node_ids(prog: drgn.Program, state: drgn.Object) -> List[int]:
    """The NUMA nodes set in ``node_states[state]``, ascending (``for_each_node_state``).

    :param state: ``enum node_states`` (``N_MEMORY``, ``N_ONLINE``, ...)
    :raises LookupError: the kernel has no ``node_states``.
    """
    try:
        count = prog["nr_node_ids"].value_()
    except KeyError:  # CONFIG_NUMA=n: nr_node_ids is the macro 1
        count = 1
    bits = prog["node_states"][state].bits
    word_bits = 8 * drgn.sizeof(bits.type_.type)
    words = bits[:(count + word_bits - 1) // word_bits].value_()
    return [i * word_bits + j for i, word in enumerate(words)
            for j in range(min(word_bits, count - i * word_bits)) if word >> j & 1]


def online_pgdats(prog: drgn.Program) -> List[drgn.Object]:
    """The ``struct pglist_data *`` of every online node (``for_each_online_pgdat``).

    :raises LookupError: the kernel has no ``node_states``.
    """
    pgdats = []
    for nid in node_ids(prog, prog["N_ONLINE"]):
        try:
            pgdats.append(prog["node_data"][nid])
        except KeyError:  # CONFIG_NUMA=n
            pgdats.append(prog["contig_page_data"].address_of_())
    return pgdats


_KCONFIG_KEY = "kho_inspect.target.kconfig"


def kernel_config(prog: drgn.Program) -> Mapping[str, str]:
    """The kernel's build configuration (``CONFIG_IKCONFIG``), option -> value.

    Read once per program (kept in ``prog.cache``).

    :raises LookupError: the kernel was built without ``CONFIG_IKCONFIG``.
    :raises OSError, EOFError, zlib.error: the gzip'ed data is damaged.
    """
    cached = prog.cache.get(_KCONFIG_KEY)
    if cached is not None:
        return cached
    try:
        start = prog.symbol("kernel_config_data").address
        size = prog.symbol("kernel_config_data_end").address - start
    except LookupError:
        # Before Linux v5.1 the data is a variable between "IKCFG_ST" and "IKCFG_ED\0".
        try:
            data = prog["kernel_config_data"]
        except KeyError:
            raise LookupError("kernel configuration data not found; kernel must be "
                              "compiled with CONFIG_IKCONFIG") from None
        start, size = data.address_ + 8, len(data) - 17
    config = {}
    for line in gzip.decompress(prog.read(start, size)).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            if value:
                config[name] = value
    result = MappingProxyType(config)
    prog.cache[_KCONFIG_KEY] = result
    return result


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

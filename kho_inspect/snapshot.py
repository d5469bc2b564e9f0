# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Snapshot reader
---------------

The ``kho_inspect.snapshot`` module reads a whole
:class:`~kho_inspect.model.snapshot.Snapshot` of a kernel: what
``kho-inspect snapshot`` saves in kernel N right before ``kexec -e`` and
what ``kho-inspect check`` judges in kernel N+1 (on a live kernel, a vmcore
or a QEMU guest alike, so the host-side check of a core gives the guest's
results).

Each section is read on its own: one that cannot be read becomes ``None``
with the reason in :attr:`~kho_inspect.model.snapshot.Snapshot.missing` (or,
when the kernel data itself is corrupt, in ``corrupt``), never an exception.
Nothing stale is stored: memblock discarded after boot is ``None``, and a
scratch array left behind by a failed ``kho_reserve_scratch()`` or
``kho_init()`` is not ``scratch`` (it is evidence in ``activation``; see
:mod:`kho_inspect.diagnosis`). What this kernel hands over (the outgoing
tree and root FDT) is read last, as close to the kexec as possible.
"""

import json
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import drgn
from drgn import Architecture, Program, ProgramFlags

from kho_inspect.diagnosis import (
    command_line,
    diagnose,
    low_address_limit,
    read_cma_areas,
    scratch_alignment,
)
from kho_inspect.errors import CorruptTreeError, InputError, KhoInspectError
from kho_inspect.kho_fdt import read_kho_fdt
from kho_inspect.kho_status import kho_status
from kho_inspect.memblock import (
    MEMBLOCK_SOURCE,
    memblock_flag_table,
    read_memblock,
    read_reserve_mem,
)
from kho_inspect.model.diagnosis import KhoActivation
from kho_inspect.model.kho import KhoStatus
from kho_inspect.model.memblock import MemblockState
from kho_inspect.model.snapshot import Snapshot, fdt_summary, load_snapshot_document
from kho_inspect.preserved import read_outgoing, read_reserved
from kho_inspect.ranges import Range
from kho_inspect.scratch import memory_nodes, scratch_report
from kho_inspect.target import direct_map_phys, find_variable, kernel_release

__all__ = ("SECTIONS", "image_range", "initrd_range", "load_snapshot_file", "read_snapshot")

SECTIONS = ("status", "memblock", "activation", "scratch", "preserved_in", "fdt_in",
            "hugetlb", "image", "initrd", "reserve_mem", "cma_areas", "preserved_out",
            "fdt_out")
"""The optional sections of a snapshot, in the order they are read."""

START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
"""x86_64 ``__START_KERNEL_map``, the kernel image's virtual base
(arch/x86/include/asm/page_64_types.h)."""

_ARCHES = {Architecture.X86_64: "x86_64", Architecture.AARCH64: "aarch64"}
_READ_ERRORS = (LookupError, drgn.FaultError, drgn.ObjectAbsentError, ValueError)
NOT_READ = "not read (not asked for)"


class _Missing(Exception):
    """A section is absent for a reason that is no error (a cold boot has no
    incoming FDT); the message is the reason."""


def _text(error: BaseException) -> str:
    return str(error) if isinstance(error, (KhoInspectError, _Missing)) else (
        f"{type(error).__name__}: {error}")


class _Reader:
    def __init__(self, prog: Program, wanted: Tuple[str, ...], strict: bool) -> None:
        self.prog = prog
        self.wanted = wanted
        self.strict = strict
        self.values: Dict[str, Any] = {}
        self.missing: Dict[str, str] = {}
        self.corrupt: Dict[str, str] = {}

    def read(self, name: str, reader: Callable[[], Any]) -> Any:
        """``reader()``, or ``None`` with the reason in ``missing``/``corrupt``."""
        if name not in self.wanted:
            self.missing[name] = NOT_READ
            return None
        try:
            value = reader()
        except CorruptTreeError as e:
            self.corrupt[name] = str(e)
            value = None
        except (_Missing, KhoInspectError, *_READ_ERRORS) as e:
            self.missing[name] = _text(e)
            value = None
        except Exception as e:  # noqa: BLE001 - one bad section must not lose the others
            if self.strict:
                raise
            self.missing[name] = f"reading it failed unexpectedly ({_text(e)})"
            value = None
        self.values[name] = value
        return value

    def field(self, reader: Callable[[], Any], default: Any = None) -> Any:
        """A scalar field: its value, or ``default`` when unreadable."""
        try:
            return reader()
        except (KhoInspectError, *_READ_ERRORS):
            return default


# --- the running kernel's image and initrd ------------------------------------------


_IMAGE_END_SYMBOLS = ("__end_of_kernel_reserve", "__bss_stop", "_end")
"""The end of the image, best first: x86 ``setup_arch()`` reserves ``[_text,
__end_of_kernel_reserve)``; ``_end`` is an absolute symbol in some vmlinux
files and then is not moved with KASLR (seen on the lab's 7.3 kernel)."""


def _image_end(prog: Program) -> int:
    for name in _IMAGE_END_SYMBOLS:
        try:
            return prog.symbol(name).address
        except LookupError:
            continue
    raise LookupError("no symbol marks the end of the kernel image")


def image_range(prog: Program) -> Range:
    """The physical range of the running kernel, ``[_text, _end)``.

    x86_64: ``__pa_symbol()`` = ``x - __START_KERNEL_map + phys_base``
    (arch/x86/include/asm/page_64.h); arm64: ``x - kimage_voffset``.

    :raises LookupError: the symbols are missing or the architecture is
        neither x86_64 nor arm64.
    """
    start, end = prog.symbol("_text").address, _image_end(prog)
    arch = prog.platform.arch if prog.platform is not None else None
    if arch == Architecture.X86_64:
        # phys_base is defined in assembly (arch/x86/kernel/head_64.S): a symbol
        # without a type in the debug info, so read its 8 bytes by address.
        offset = START_KERNEL_MAP - prog.read_u64(prog.symbol("phys_base").address)
    elif arch == Architecture.AARCH64:
        offset = prog["kimage_voffset"].value_()
    else:
        raise LookupError(f"the physical address of the kernel image is not known on {arch}")
    return Range.from_bounds(start - offset, end - offset)


def initrd_range(prog: Program) -> Range:
    """The physical range of the initrd this kernel was booted with.

    x86: ``boot_params.hdr.ramdisk_image``/``ramdisk_size`` with their
    ``ext_`` high halves (``get_ramdisk_image()``, arch/x86/kernel/setup.c:296),
    which survive boot; elsewhere ``initrd_start``/``initrd_end``, which
    ``free_initrd_mem()`` clears (init/initramfs.c:658).

    :raises _Missing: no initrd, or no longer known.
    """
    try:
        params = prog["boot_params"]
    except LookupError:
        params = None
    if params is not None:
        hdr = params.hdr
        image = hdr.ramdisk_image.value_() | params.ext_ramdisk_image.value_() << 32
        size = hdr.ramdisk_size.value_() | params.ext_ramdisk_size.value_() << 32
        if not size:
            raise _Missing("booted without an initrd (boot_params.hdr.ramdisk_size is 0)")
        return Range(image, size)
    try:
        start, end = prog["initrd_start"].value_(), prog["initrd_end"].value_()
    except LookupError as e:
        raise _Missing("the debug info has neither boot_params nor initrd_start, so where "
                       "the initrd was is unknown") from e
    if not start:
        raise _Missing("booted without an initrd, or the initrd was freed after boot "
                       "(initrd_start is 0)")
    return Range.from_bounds(direct_map_phys(prog, start), direct_map_phys(prog, end))


# --- sections ---------------------------------------------------------------------------


def _activation_missing(act: Optional[KhoActivation], reader: _Reader) -> str:
    if act is None:
        return f"whether KHO is active is not known: {reader.missing.get('activation', '')}"
    words = {"not built": "KHO is not built into this kernel",
             "not requested": "KHO was not requested on this kernel",
             "disabled": "KHO was requested but is disabled on this kernel (the activation "
                         "says why)"}
    return words.get(act.state, f"KHO is {act.state} on this kernel")


def _scratch(reader: _Reader, state: Optional[MemblockState]) -> Any:
    act: Optional[KhoActivation] = reader.values.get("activation")
    status: Optional[KhoStatus] = reader.values.get("status")
    if (act is None or not act.active) and not (status is not None and status.kho_boot):
        text = _activation_missing(act, reader)
        if act is not None and act.sizing is not None:
            text += "; kho_scratch[] holds a failed attempt, kept as sizing evidence"
        raise _Missing(text)
    return scratch_report(reader.prog, state)


def _preserved_in(reader: _Reader, state: Optional[MemblockState],
                  memblock_note: Optional[str]) -> Any:
    status: Optional[KhoStatus] = reader.values.get("status")
    if status is None or not status.kho_boot:
        raise _Missing("not booted through KHO: nothing was handed over to this kernel")
    if state is None:
        raise _Missing("memblock not kept on this kernel: the noinit reservations that hold "
                       f"what the previous kernel preserved are gone ({memblock_note})")
    return read_reserved(reader.prog, state)


def _fdt(reader: _Reader, direction: str) -> Any:
    status: Optional[KhoStatus] = reader.values.get("status")
    if status is None:
        raise _Missing(f"no KHO status: {reader.missing.get('status', '')}")
    if direction == "in" and not status.kho_boot:
        raise _Missing("not booted through KHO: there is no incoming root FDT")
    if direction == "out" and not status.fdt_out:
        act = reader.values.get("activation")
        raise _Missing(f"kho_out.fdt is NULL: {_activation_missing(act, reader)}")
    return fdt_summary(read_kho_fdt(reader.prog, direction))


def _preserved_out(reader: _Reader) -> Any:
    act: Optional[KhoActivation] = reader.values.get("activation")
    if act is not None and not act.active:
        raise _Missing(_activation_missing(act, reader))
    return read_outgoing(reader.prog)


def _hugetlb(prog: Program) -> Any:
    try:
        from kho_inspect.hugetlb import read_hugetlb
    except ImportError as e:  # the hugetlb reader is not part of this build yet
        raise _Missing(f"this kho-inspect cannot read hugetlb pages ({e})") from e
    return read_hugetlb(prog)


def _kho_scratch_only(prog: Program) -> bool:
    # static bool kho_scratch_only (mm/memblock.c), ordinary data.
    return bool(find_variable(prog, ("kho_scratch_only",), MEMBLOCK_SOURCE)[1].value_())


def _arch(prog: Program) -> Optional[str]:
    if prog.platform is None:
        return None
    return _ARCHES.get(prog.platform.arch, prog.platform.arch.name.lower())


def _numa(prog: Program) -> bool:
    return prog.type("struct memblock_region").has_member("nid")


def read_snapshot(prog: Program, *, taken_from: Optional[str] = None,
                  sections: Optional[Iterable[str]] = None, log: Optional[str] = None,
                  strict: bool = False) -> Snapshot:
    """Read a snapshot of ``prog``; a section that cannot be read is
    ``None`` with the reason, never an exception.

    :param taken_from: ``"live"``, ``"vmcore"`` or ``"qemu"`` (by default
        ``"live"`` for a live kernel, else ``"vmcore"``).
    :param sections: the optional sections to read (default: all of
        :data:`SECTIONS`); the others are ``None`` with the reason "not read".
    :param log: the kernel log, if already read (``dmesg`` text); otherwise
        the KHO diagnosis reads the printk buffer only when KHO is not active.
    :param strict: let unexpected errors (bugs) propagate instead of
        recording them as missing sections.
    """
    wanted = SECTIONS if sections is None else tuple(sections)
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise ValueError(f"no such snapshot sections: {sorted(unknown)}")
    r = _Reader(prog, wanted, strict)
    r.read("status", lambda: kho_status(prog))
    state: Optional[MemblockState] = r.read("memblock", lambda: read_memblock(prog))
    memblock_note = r.missing.get("memblock")
    # The diagnosis reads the printk buffer itself when KHO is off (to say why); with
    # KHO active it needs no log, and decoding a memblock=debug log costs as much
    # as loading the debug info (bench/bench_check.py).
    r.read("activation", lambda: diagnose(prog, state, memblock_note or (
        None if state is not None else "not read"), log))
    r.read("scratch", lambda: _scratch(r, state))
    r.read("preserved_in", lambda: _preserved_in(r, state, memblock_note))
    r.read("fdt_in", lambda: _fdt(r, "in"))
    r.read("hugetlb", lambda: _hugetlb(prog))
    r.read("image", lambda: image_range(prog))
    r.read("initrd", lambda: initrd_range(prog))
    reserve = r.read("reserve_mem", lambda: state.reserve_mem if state is not None
                     else read_reserve_mem(prog))
    cma = r.read("cma_areas", lambda: read_cma_areas(prog))
    # What this kernel hands over, as late as possible.
    r.read("preserved_out", lambda: _preserved_out(r))
    r.read("fdt_out", lambda: _fdt(r, "out"))
    if taken_from is None:
        taken_from = "live" if prog.flags & ProgramFlags.IS_LIVE else "vmcore"
    notes: List[str] = []
    if "log" in r.missing:
        notes.append(f"The kernel log was not read: {r.missing.pop('log')}")
    return Snapshot(
        release=kernel_release(prog),
        command_line=command_line(prog),
        arch=_arch(prog),
        page_shift=r.field(lambda: prog["PAGE_SHIFT"].value_(), 12),
        memblock_flags=state.flags if state is not None else memblock_flag_table(prog),
        memory_nodes=tuple(r.field(lambda: memory_nodes(prog), [0])),
        numa=r.field(lambda: _numa(prog)),
        scratch_alignment=scratch_alignment(prog),
        low_address_limit=low_address_limit(prog),
        kho_scratch_only=r.field(lambda: _kho_scratch_only(prog)),
        status=r.values.get("status"),
        activation=r.values.get("activation"),
        memblock=state,
        scratch=r.values.get("scratch"),
        preserved_out=r.values.get("preserved_out"),
        preserved_in=r.values.get("preserved_in"),
        fdt_out=r.values.get("fdt_out"),
        fdt_in=r.values.get("fdt_in"),
        hugetlb=r.values.get("hugetlb"),
        image=r.values.get("image"),
        initrd=r.values.get("initrd"),
        reserve_mem=tuple(reserve or ()),
        cma_areas=tuple(cma or ()),
        taken_from=taken_from,
        missing=dict(r.missing),
        corrupt=dict(r.corrupt),
        notes=tuple(notes),
    )


def load_snapshot_file(path: str, given: str = "snapshot") -> Snapshot:
    """Read a snapshot document saved by ``kho-inspect snapshot``.

    :param given: the keyword the path came in, for the error's wording.
    :raises InputError: the file cannot be read, is not JSON or not a snapshot.
    """
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as e:
        raise InputError(f"Cannot read the snapshot {path}: {e.strerror}", path=path,
                         given=given) from e
    except ValueError as e:
        raise InputError(f"The snapshot {path} is not JSON ({e})", path=path,
                         given=given) from e
    return load_snapshot_document(obj, f"the snapshot {path}")

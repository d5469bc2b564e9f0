# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO diagnosis reader
--------------------

The ``kho_inspect.diagnosis`` module gathers from a target what
:func:`kho_inspect.activation.decide` needs to say whether Kexec HandOver is
active and, if it was asked for and turned itself off, why: the KHO globals
(``kho_enable``, ``kho_out.fdt``, ``kho_in.fdt_phys``), the command line
(``saved_command_line``), the in-kernel config, whether this is a kdump
kernel, the kernel's own log (the printk buffer), the scratch array even when
it only describes a freed attempt, memblock where the kernel keeps it, the
CMA areas (``cma_areas[]``, by name: ``hugetlb_cma=`` makes ``hugetlbN``)
and the ``reserve_mem=`` regions. It decides nothing itself.

It also reads the constants the scratch layout depends on, which
:mod:`kho_inspect.snapshot` saves: ``ARCH_LOW_ADDRESS_LIMIT`` and
``SCRATCH_ALIGNMENT_BYTES`` (docs/kernel/kho.md#scratch-sizing).
"""

import contextlib
import zlib
from typing import Callable, Optional, Tuple, TypeVar

import drgn
from drgn import Architecture, Program

from kho_inspect.activation import (
    DEFAULT_LOW_LIMIT,
    ActivationInputs,
    decide,
    inactive_error,
    log_lines,
)
from kho_inspect.bootlog import starts_at_boot
from kho_inspect.errors import (
    DebugInfoError,
    KhoInspectError,
    MemoryReadError,
    NotKhoKernelError,
    StaleMemblockError,
)
from kho_inspect.kho import is_kho_boot, kho_enabled, kho_out, luo_state
from kho_inspect.memblock import read_memblock, read_reserve_mem
from kho_inspect.model.diagnosis import KhoActivation
from kho_inspect.model.memblock import MemblockState
from kho_inspect.model.snapshot import CmaRegion
from kho_inspect.pageblock import max_page_order
from kho_inspect.preserved import ram_ranges
from kho_inspect.printk import read_kernel_log
from kho_inspect.ranges import Range
from kho_inspect.scratch import memory_nodes, read_scratch_areas
from kho_inspect.target import kernel_config

__all__ = (
    "activation_inputs",
    "command_line",
    "diagnose",
    "explain_inactive",
    "kdump_kernel",
    "low_address_limit",
    "read_cma_areas",
    "scratch_alignment",
)

ELFCORE_ADDR_MAX = (1 << 64) - 1
"""``elfcorehdr_addr`` of a kernel that is not a kdump kernel (include/linux/crash_dump.h)."""

T = TypeVar("T")

_READ_ERRORS = (LookupError, drgn.FaultError, drgn.ObjectAbsentError, ValueError)


def command_line(prog: Program) -> Optional[str]:
    """``saved_command_line`` (``char *``), or ``None`` if unreadable."""
    try:
        return prog["saved_command_line"].string_().decode(errors="replace")
    except _READ_ERRORS:
        return None


def kdump_kernel(prog: Program) -> Optional[bool]:
    """``is_kdump_kernel()``: ``elfcorehdr_addr != ELFCORE_ADDR_MAX``
    (kernel/elfcorehdr.c); ``None`` when the kernel has no such variable."""
    try:
        return prog["elfcorehdr_addr"].value_() != ELFCORE_ADDR_MAX
    except _READ_ERRORS:
        return None


def _enable_default(prog: Program) -> Optional[bool]:
    # CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT, from CONFIG_IKCONFIG's gzip'ed config.
    try:
        config = kernel_config(prog)
    except (LookupError, ValueError, OSError, EOFError, zlib.error, drgn.FaultError):
        return None
    return config.get("CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT") == "y"


def low_address_limit(prog: Program) -> int:
    """``ARCH_LOW_ADDRESS_LIMIT``: ``arm64_dma_phys_limit - 1`` on arm64
    (arch/arm64/include/asm/processor.h:106), 4 GiB - 1 elsewhere."""
    if prog.platform is not None and prog.platform.arch == Architecture.AARCH64:
        with contextlib.suppress(*_READ_ERRORS):
            return prog["arm64_dma_phys_limit"].value_() - 1
    return DEFAULT_LOW_LIMIT


def scratch_alignment(prog: Program) -> Optional[int]:
    """``SCRATCH_ALIGNMENT_BYTES`` = ``PAGE_SIZE << MAX_PAGE_ORDER``
    (kernel/liveupdate/kexec_handover.c:50)."""
    try:
        return prog["PAGE_SIZE"].value_() << max_page_order(prog)
    except _READ_ERRORS:
        return None


def cma_ranges(cma: drgn.Object, page_shift: int) -> Tuple[Range, ...]:
    # 7.3: cma->ranges[:nranges] (multi-range CMA); before: cma->base_pfn, count.
    try:
        count = cma.nranges.value_()
        pairs = [(r.base_pfn.value_(), r.count.value_()) for r in cma.ranges[:count]]
    except AttributeError:
        pairs = [(cma.base_pfn.value_(), cma.count.value_())]
    return tuple(Range(pfn << page_shift, n << page_shift) for pfn, n in pairs if n)


def read_cma_areas(prog: Program) -> Tuple[CmaRegion, ...]:
    """Every range of every CMA area: ``cma_areas[:cma_area_count]`` (mm/cma.c).

    Empty for a kernel without CMA.

    :raises MemoryReadError: the array cannot be read.
    """
    try:
        count = prog["cma_area_count"].value_()
        areas = prog["cma_areas"]
    except LookupError:
        return ()
    try:
        page_shift = prog["PAGE_SHIFT"].value_()
        out = []
        for cma in areas[:count].read_():
            name = cma.name.string_().decode(errors="replace")
            try:
                nid: Optional[int] = cma.nid.value_()
            except AttributeError:  # before the node was kept in struct cma
                nid = None
            nid = None if nid is None or nid < 0 else nid
            out += [CmaRegion(name, r.base, r.size, nid) for r in cma_ranges(cma, page_shift)]
    except (drgn.FaultError, ValueError) as e:
        raise MemoryReadError(f"cma_areas[] cannot be read ({e})") from e
    return tuple(out)


def _scratch_array(prog: Program) -> Optional[Tuple[Tuple[int, int], ...]]:
    # Whatever kho_scratch[] holds, a freed attempt included (evidence only).
    try:
        _, ranges = read_scratch_areas(prog, any_state=True)
    except NotKhoKernelError:
        return ()
    except (KhoInspectError, *_READ_ERRORS):
        return None
    return tuple((r.base, r.size) for r in ranges)


def _optional(reader: Callable[[Program], T], prog: Program, default: T) -> T:
    try:
        return reader(prog)
    except KhoInspectError:
        return default


def _memblock(prog: Program) -> Tuple[Optional[MemblockState], Optional[str]]:
    try:
        return read_memblock(prog), None
    except (StaleMemblockError, MemoryReadError, DebugInfoError) as e:
        return None, str(e)


def _log(prog: Program) -> Tuple[Optional[Tuple[str, ...]], Optional[bool]]:
    try:
        lines = log_lines(read_kernel_log(prog))
    except MemoryReadError:
        return None, None
    return lines, starts_at_boot(lines)


def activation_inputs(prog: Program, memblock: Optional[MemblockState] = None,
                      memblock_note: Optional[str] = None,
                      log: Optional[str] = None) -> ActivationInputs:
    """Gather the facts of :class:`~kho_inspect.activation.ActivationInputs`.

    :param memblock: memblock already read; with ``memblock_note`` (why it
        could not be read) it is not read again.
    :param log: the kernel log already read (``dmesg`` text); otherwise it is
        read from the printk buffer when KHO is not active (to say why).
    """
    try:
        fdt_out: Optional[int] = kho_out(prog).fdt.value_()
    except NotKhoKernelError:
        return ActivationInputs(kho_built=False)
    except _READ_ERRORS:
        fdt_out = None
    if memblock is None and memblock_note is None:
        memblock, memblock_note = _memblock(prog)
    enable = kho_enabled(prog)
    lines: Optional[Tuple[str, ...]] = None
    from_boot: Optional[bool] = None
    if log is not None:
        lines = log_lines(log)
        from_boot = any("Linux version" in line for line in lines[:50])
    elif not (fdt_out and enable is not False):
        # Only a KHO that is off needs the log to say why; reading the whole
        # printk buffer is slow on a large log.
        lines, from_boot = _log(prog)
    boot: Optional[bool]
    try:
        boot = is_kho_boot(prog)
    except _READ_ERRORS:
        boot = None
    return ActivationInputs(
        kho_built=True,
        kho_enable=enable,
        fdt_out=fdt_out,
        kho_boot=boot,
        command_line=command_line(prog),
        enable_default=_enable_default(prog),
        kdump=kdump_kernel(prog),
        log=lines,
        log_from_boot=from_boot,
        luo=luo_state(prog)[1],
        array=_scratch_array(prog),
        memory_nodes=tuple(memory_nodes(prog)),
        memblock=memblock,
        cma=_optional(read_cma_areas, prog, ()),
        reserve_mem=memblock.reserve_mem if memblock is not None else _optional(
            read_reserve_mem, prog, ()),
        ram=ram_ranges(prog) if memblock is None else None,
        low_limit=low_address_limit(prog),
        alignment=scratch_alignment(prog),
        memblock_note=memblock_note,
    )


def diagnose(prog: Program, memblock: Optional[MemblockState] = None,
             memblock_note: Optional[str] = None, log: Optional[str] = None) -> KhoActivation:
    """Whether KHO is active on ``prog``, and why not (see :func:`activation_inputs`)."""
    return decide(activation_inputs(prog, memblock, memblock_note, log))


def explain_inactive(prog: Program, error: KhoInspectError, what: str) -> KhoInspectError:
    """The error to report when reading ``what`` failed with ``error``
    because KHO is off: the activation's state and reason, when KHO was asked
    for and is not active; ``error`` itself otherwise (KHO active, or not
    built, which ``error`` already says)."""
    act = diagnose(prog)
    if act.state in ("not requested", "disabled"):
        return inactive_error(act, what)
    return error

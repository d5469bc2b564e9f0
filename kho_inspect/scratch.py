# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO scratch reader
------------------

The ``kho_inspect.scratch`` module reads what ``kho-inspect kho scratch``
reports: the scratch array ``kho_scratch[:kho_scratch_cnt]`` (or its renamed
twin, :data:`kho_inspect.kho.SCRATCH_SYMBOLS`), the ``memblock.memory``
regions flagged for scratch, the pageblock migratetypes of each scratch
class, and the free ``MIGRATE_CMA`` blocks that say how much of the original
scratch is in use. The classes and the report are derived by the pure
:mod:`kho_inspect.model.scratch` (see there for what *original*,
*extended* and *unpreserved* mean).

``zone->cma_pages`` and the ``NR_FREE_CMA_PAGES`` counters are reported
beside the measured use: they cover all CMA (``cma=``, hugetlb CMA too), not
only scratch.
"""

from typing import Dict, List, Optional, Tuple

import drgn
from drgn import Program

from kho_inspect.buddy import read_cma_usage
from kho_inspect.errors import (
    CorruptTreeError,
    DebugInfoError,
    MemoryReadError,
    NotKhoKernelError,
    StaleMemblockError,
)
from kho_inspect.kho import find_scratch_symbols, is_kho_boot, kho_enabled, kho_in
from kho_inspect.memblock import memblock_flag_table, read_memblock
from kho_inspect.model.memblock import MemblockState
from kho_inspect.model.pageblock import PageblockLayout, PageblockRun, merge_runs
from kho_inspect.model.scratch import CLASSES, ScratchClasses, ScratchReport, build_report, classify
from kho_inspect.pageblock import SectionUsemaps, pageblock_layout
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.target import node_ids

__all__ = (
    "memory_nodes",
    "read_scratch_areas",
    "scratch_report",
)

_MAX_AREAS = 4096 + 2  # MAX_NUMNODES (NODES_SHIFT <= 12) + lowmem + global


def read_scratch_areas(prog: Program, any_state: bool = False
                       ) -> Tuple[Tuple[str, str], List[Range]]:
    """Read ``kho_scratch[:kho_scratch_cnt]`` (or its renamed twin) in one read.

    :param any_state: read the array even when KHO is off: after a failed
        ``kho_reserve_scratch()`` or ``kho_init()`` it still describes the
        freed attempt (evidence for :mod:`kho_inspect.diagnosis`, never scratch).
    :return: the symbol names found and one range per ``struct kho_scratch``.
    :raises NotKhoKernelError: no symbols, the array is empty, or KHO is off.
    :raises CorruptTreeError: an impossible count.
    """
    names = find_scratch_symbols(prog)
    pointer, count = prog[names[0]], prog[names[1]].value_()
    if not pointer.value_() or not count:
        raise NotKhoKernelError(
            f"{names[0]} is empty ({names[1]} = {count})",
            "KHO is not active on this kernel (not requested, or it failed to reserve "
            "scratch: see the kernel log)",
        )
    if count > _MAX_AREAS:
        raise CorruptTreeError(
            f"{names[1]} = {count} exceeds the {_MAX_AREAS} areas a kernel can have",
            "the value is corrupt or the debug info does not match the kernel",
        )
    # kho_enable is false after a failure, while the array still points at
    # what was freed (docs/kernel/kho.md#scratch-reservation); a KHO boot's
    # inherited array is real even when this kernel has KHO off.
    if not any_state and kho_enabled(prog) is False and not _kho_boot(prog):
        raise NotKhoKernelError(
            f"{names[0]}[:{names[1]}] describes no scratch: KHO is off on this kernel "
            "(kho_enable is false), and after a failed kho_reserve_scratch() or kho_init() "
            "the array still points at the freed attempt",
            "the KHO activation (kernel log, scratch sizing) says why KHO is off",
        )
    entries = pointer[:count].read_()
    return names, [Range(e.addr.value_(), e.size.value_()) for e in entries]


def memory_nodes(prog: Program) -> List[int]:
    """The nodes of ``node_states[N_MEMORY]``, ascending ([0] without NUMA data)."""
    try:
        return node_ids(prog, prog["N_MEMORY"])
    except LookupError:
        return [0]


def _class_runs(prog: Program, classes: ScratchClasses) -> Tuple[
        Dict[str, List[PageblockRun]], Optional[PageblockLayout], List[str]]:
    try:
        layout = pageblock_layout(prog)
        reader = SectionUsemaps(prog, layout)
        runs = {name: merge_runs(run for r in classes.get(name) for run in reader.runs(r))
                for name in CLASSES}
    except (DebugInfoError, LookupError, drgn.FaultError) as e:
        return {}, None, [f"Pageblock migratetypes could not be read: {e}"]
    return runs, layout, []


def _totalram_bytes(prog: Program) -> Optional[int]:
    try:
        try:  # _totalram_pages since Linux v5.0 (an atomic_long_t)
            pages = prog["_totalram_pages"].counter.value_()
        except KeyError:
            pages = prog["totalram_pages"].value_()
        return pages << prog["PAGE_SHIFT"].value_()
    except (LookupError, drgn.FaultError):
        return None


def _try_memblock(prog: Program) -> Tuple[Optional[MemblockState], Optional[str]]:
    # The scratch array, migratetypes and CMA use stay valid when memblock
    # was discarded after boot (x86 without ARCH_KEEP_MEMBLOCK).
    try:
        return read_memblock(prog), None
    except (StaleMemblockError, MemoryReadError) as e:
        return None, str(e)


def _kho_boot(prog: Program) -> Optional[bool]:
    try:
        return is_kho_boot(prog) if kho_in(prog) is not None else None
    except drgn.FaultError:
        return None


def scratch_report(prog: Program, memblock: Optional[MemblockState] = None) -> ScratchReport:
    """Read everything ``kho scratch`` reports from ``prog``.

    :param memblock: an already read memblock state (read if not given).
    :raises NotKhoKernelError: no scratch symbols, or KHO is off.
    """
    symbols, array = read_scratch_areas(prog)
    state, error = (memblock, None) if memblock is not None else _try_memblock(prog)
    regions = state.memory.regions if state is not None else ()
    flags = state.flags if state is not None else memblock_flag_table(prog)
    classes = classify(RangeSet(array), regions, flags)
    runs, layout, notes = _class_runs(prog, classes)
    return build_report(
        symbols=symbols, array=array, nodes=memory_nodes(prog), memblock=state,
        classes=classes, runs=runs, layout=layout, usage=read_cma_usage(prog),
        totalram=_totalram_bytes(prog), notes=notes, kho_boot=_kho_boot(prog),
        memblock_error=error,
    )

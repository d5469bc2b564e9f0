# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Boot-log model
--------------

The ``kho_inspect.model.bootlog`` module holds what
:mod:`kho_inspect.bootlog` rebuilds from a kernel log recorded with
``memblock=debug``: every boot-time memblock allocation with its physical
range, the caller that asked for it and the reservation flags, and the
*scratch-only window* of a KHO boot (from ``KHO: found kexec handover data.``
to the release of memory to the buddy allocator), during which every memblock
allocation must come from scratch memory.

Nothing here touches drgn; every class round-trips through JSON.
"""

from typing import Optional, Tuple

from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel
from kho_inspect.ranges import Range

__all__ = ("BootAllocation", "BootLog", "BootWindow", "CLASS_UNKNOWN")

CLASS_UNKNOWN = "unknown"
"""The class of an allocation that was not classified against a region map."""


@frozen
class BootWindow(JsonModel):
    """Line numbers (1-based, of the log given) bounding the scratch-only window.

    :param start_line: the ``KHO: found kexec handover data.`` line.
    :param end_line: the first line printed after ``memblock_free_all()``
        (``SLUB: HWalign=...`` from ``kmem_cache_init()``), or the last line
        of the log when the log stops inside the window (``closed`` false).
    """

    start_line: int
    end_line: int
    closed: bool = True

    def contains(self, line: int) -> bool:
        return self.start_line <= line <= self.end_line


@frozen
class BootAllocation(JsonModel):
    """One memblock allocation (or reservation) rebuilt from the log.

    :param phys: first byte (``phys_addr_t``).
    :param size: bytes.
    :param caller: the symbol that asked (``%pS`` of the request line, or of
        the ``__memblock_reserve`` line for a plain reservation), without
        the offset.
    :param request: the memblock function that logged the request
        (``memblock_alloc_try_nid``, ``memblock_alloc_hugetlb``, ...) or
        ``__memblock_reserve`` for a reservation with no request line.
    :param flags: ``enum memblock_flags`` names of the reservation (a bit the
        table does not name stays a hex string).
    :param flags_value: the raw ``flags=%x`` value as logged.
    :param nid: the node asked for (``None`` for ``NUMA_NO_NODE``).
    :param line: 1-based line number of the ``__memblock_reserve`` line.
    :param in_window: whether it happened inside the scratch-only window.
    :param klass: the region class the range lies in (``original``,
        ``extended``, ``unpreserved``, ``preserved``, ``other``, a
        ``partly ...`` mix) or ``unknown`` before classification.
    """

    phys: int
    size: int
    caller: str
    request: str
    flags: Tuple[str, ...]
    flags_value: int
    nid: Optional[int]
    line: int
    in_window: bool = False
    klass: str = CLASS_UNKNOWN

    @property
    def range(self) -> Range:
        return Range(self.phys, self.size)

    @property
    def is_allocation(self) -> bool:
        """Whether memblock chose the address (a request line was paired)."""
        return self.request != "__memblock_reserve"


@frozen
class BootLog(JsonModel):
    """Everything :func:`kho_inspect.bootlog.parse_bootlog` found.

    :param window: the scratch-only window; ``None`` on a cold boot (no
        ``found kexec handover data`` line).
    :param allocations: memblock allocations and reservations in log order.
    :param unpaired: request lines that no reservation followed (the
        allocation failed or the log lost lines).
    :param lines: how many lines the log had.
    :param truncated: the log does not start at boot (no ``Linux version``
        line near its top): early lines were lost, for example to a log
        buffer that wrapped (boot with ``log_buf_len=``).
    """

    window: Optional[BootWindow]
    allocations: Tuple[BootAllocation, ...]
    unpaired: Tuple[str, ...] = ()
    lines: int = 0
    truncated: bool = False

    def in_window(self) -> Tuple[BootAllocation, ...]:
        return tuple(a for a in self.allocations if a.in_window and a.is_allocation)

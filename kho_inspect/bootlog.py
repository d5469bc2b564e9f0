# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Boot log
--------

The ``kho_inspect.bootlog`` module rebuilds boot-time memblock allocations from
a kernel log recorded with ``memblock=debug``. Boot-time memblock and gigantic
hugetlb allocations happen before any kprobe or BPF program can exist, so the
kernel's own debug lines are the only trace of them (docs/kernel/memblock.md,
"memblock=debug").

The request lines (``memblock_alloc_try_nid: 4096 bytes align=0x1000 nid=-1
from=... max_addr=... alloc_node_data+0x5c/0x1a0``) do not print the address
memblock chose. Each is paired with the next ``__memblock_reserve`` line whose
caller is ``memblock_alloc_range_nid`` (flags ``RSRV_KERN``) or
``memblock_alloc_hugetlb`` (``RSRV_KERN|RSRV_HUGETLB``, logged ``flags=a0``
on Linux 7.3); that line carries the range. A reservation with another caller
(``memblock_reserve()`` is an inline wrapper, so its line names the real
caller) is kept as a plain reservation.

On a KHO boot the *scratch-only window* runs from ``KHO: found kexec handover
data.`` (the end of ``kho_populate()``, which sets ``kho_scratch_only``) to
``memblock_free_all()``, which clears it; ``memblock_free_all()`` prints
nothing, so the window ends at the first line after it,
``kmem_cache_init()``'s ``SLUB: HWalign=...``. Every allocation inside must
lie in scratch memory (docs/kernel/invariants.md).

Everything here is pure: text in, :class:`~kho_inspect.model.bootlog.BootLog`
out; flag names come from a :class:`~kho_inspect.model.FlagTable` read from
the target's debug info (or a snapshot), never from a table of values.
"""

import re
from bisect import bisect_left, bisect_right
from dataclasses import replace
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from kho_inspect.model.bootlog import BootAllocation, BootLog, BootWindow
from kho_inspect.model.memblock import FlagTable
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "WINDOW_START",
    "WINDOW_END",
    "parse_bootlog",
    "classify_allocations",
    "classify_range",
    "range_classifier",
    "starts_at_boot",
)

WINDOW_START = "KHO: found kexec handover data."
"""``kho_populate()`` (kernel/liveupdate/kexec_handover.c) logs this last."""

WINDOW_END = "SLUB: HWalign="
"""``kmem_cache_init()`` (mm/slub.c), the first line after ``memblock_free_all()``."""

_ALLOCATORS = ("memblock_alloc_range_nid", "memblock_alloc_hugetlb")
"""Callers of ``__memblock_reserve()`` whose line carries an allocation's result."""

_HEX = r"0x([0-9a-f]+)"
_RESERVE = re.compile(
    rf"__memblock_reserve: \[{_HEX}-{_HEX}\] nid=(-?\d+) flags=([0-9a-f]+) (\S+)")
_REQUEST = re.compile(
    r"(memblock_(?:phys_alloc_range|alloc_exact_nid_raw|alloc_try_nid_raw|alloc_try_nid|"
    r"alloc_hugetlb)): (\d+) bytes(.*) (\S+)\s*$")
_NID = re.compile(r"\bnid=(-?\d+)")
_BOOT_START = "Linux version"


def starts_at_boot(lines: Sequence[str]) -> bool:
    """Whether a log holds its boot: the ``Linux version`` banner near its top (a log
    buffer that wrapped lost it)."""
    return any(_BOOT_START in line for line in lines[:50])


def _symbol(pS: str) -> str:
    """``alloc_node_data+0x5c/0x1a0`` -> ``alloc_node_data``."""
    return pS.split("+", 1)[0]


def _nid(value: Optional[str]) -> Optional[int]:
    if value is None or int(value) < 0:
        return None  # NUMA_NO_NODE
    return int(value)


def _window(lines: Sequence[str]) -> Optional[BootWindow]:
    start = next((i for i, line in enumerate(lines) if WINDOW_START in line), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if WINDOW_END in lines[i]), None)
    if end is None:
        return BootWindow(start + 1, len(lines), closed=False)
    return BootWindow(start + 1, end + 1)


class _Pairing:
    """Pairs request lines with the reservation line that carries their result."""

    def __init__(self, flags: FlagTable, window: Optional[BootWindow]) -> None:
        self.flags = flags
        self.window = window
        self.pending: Optional[Tuple[str, str, Optional[int], str]] = None
        self.allocations: List[BootAllocation] = []
        self.unpaired: List[str] = []

    def request(self, match: "re.Match[str]", text: str) -> None:
        if self.pending is not None:
            self.unpaired.append(self.pending[3])
        nid = _NID.search(match.group(3))
        self.pending = (match.group(1), _symbol(match.group(4)),
                        _nid(nid.group(1) if nid else None), text.strip())

    def reserve(self, match: "re.Match[str]", number: int) -> None:
        start, last = int(match.group(1), 16), int(match.group(2), 16)
        value = int(match.group(4), 16)
        caller = _symbol(match.group(5))
        request, nid = "__memblock_reserve", _nid(match.group(3))
        if caller in _ALLOCATORS:
            request = caller
            if self.pending is not None:
                request, caller, asked, _ = self.pending
                nid = asked if asked is not None else nid
                self.pending = None
        self.allocations.append(BootAllocation(
            phys=start,
            size=last - start + 1,
            caller=caller,
            request=request,
            flags=self.flags.decode(value),
            flags_value=value,
            nid=nid,
            line=number,
            in_window=self.window is not None and self.window.contains(number),
        ))


def parse_bootlog(text: str, flags: Optional[FlagTable] = None) -> BootLog:
    """Rebuild memblock allocations and the scratch-only window from a log.

    :param text: the kernel log (``dmesg`` output, a serial console capture,
        or the printk buffer read from a target), with or without timestamps.
    :param flags: the target's ``enum memblock_flags``; without it every
        flag bit is kept as a hex string.

    >>> log = "\\n".join([
    ...     "Linux version 7.3.4",
    ...     "KHO: found kexec handover data.",
    ...     "memblock_alloc_try_nid: 4096 bytes align=0x1000 nid=-1 alloc_node_data+0x5c/0x1a0",
    ...     "__memblock_reserve: [0x000000013ffff000-0x000000013fffffff] nid=-1 flags=20 "
    ...     "memblock_alloc_range_nid+0x104/0x1b0",
    ...     "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=2, Nodes=1"])
    >>> boot = parse_bootlog(log, FlagTable({"RSRV_KERN": 0x20}))
    >>> boot.window
    BootWindow(start_line=2, end_line=5, closed=True)
    >>> a = boot.allocations[0]
    >>> hex(a.phys), a.size, a.caller, a.request, a.flags, a.in_window
    ('0x13ffff000', 4096, 'alloc_node_data', 'memblock_alloc_try_nid', ('RSRV_KERN',), True)
    """
    lines = text.splitlines()
    window = _window(lines)
    pairing = _Pairing(flags or FlagTable({}), window)
    for number, line in enumerate(lines, start=1):
        if "memblock" not in line:
            continue
        match = _RESERVE.search(line)
        if match:
            pairing.reserve(match, number)
            continue
        match = _REQUEST.search(line)
        if match:
            pairing.request(match, line)
    if pairing.pending is not None:
        pairing.unpaired.append(pairing.pending[3])
    return BootLog(
        window=window,
        allocations=tuple(pairing.allocations),
        unpaired=tuple(pairing.unpaired),
        lines=len(lines),
        truncated=bool(lines) and not starts_at_boot(lines),
    )


class _Classes:
    """``(name, ranges)`` pairs as sorted bounds, for lookups by bisection: a boot log
    has tens of thousands of lines to classify, and set algebra per line is too slow."""

    def __init__(self, classes: Sequence[Tuple[str, RangeSet]]) -> None:
        self.names = [name for name, _ in classes]
        self.bounds = [([r.base for r in ranges], [r.end for r in ranges])
                       for _, ranges in classes]

    def classify(self, rng: Range) -> str:
        touched = []
        for name, (starts, ends) in zip(self.names, self.bounds):
            i = bisect_right(starts, rng.base) - 1  # the last range starting at or before
            if i >= 0 and ends[i] >= rng.end:
                return name  # merged ranges: one range covers it or none does
            j = bisect_left(starts, rng.end)  # ranges starting before rng's end
            if j > 0 and ends[j - 1] > rng.base and rng.size:
                touched.append(name)
        return "partly " + "+".join(touched) if touched else "other"


def classify_range(rng: Range, classes: Sequence[Tuple[str, RangeSet]]) -> str:
    """The first class whose ranges cover ``rng``; ``partly a+b`` for a range
    that only overlaps classes; ``other`` for none.

    >>> classes = [("original", RangeSet([Range(0, 0x1000)])),
    ...            ("extended", RangeSet([Range(0x1000, 0x1000)]))]
    >>> classify_range(Range(0, 0x800), classes), classify_range(Range(0x800, 0x1000), classes)
    ('original', 'partly original+extended')
    >>> classify_range(Range(0x4000, 1), classes)
    'other'
    """
    return _Classes(classes).classify(rng)


def range_classifier(classes: Sequence[Tuple[str, RangeSet]]) -> Callable[[Range], str]:
    """:func:`classify_range` with the lookup built once, for many ranges (a trace)."""
    return _Classes(classes).classify


def classify_allocations(log: BootLog, classes: Iterable[Tuple[str, RangeSet]]) -> BootLog:
    """A copy of ``log`` with every allocation's class set (pure).

    :param classes: ``(name, ranges)`` in priority order, for example
        original scratch, extended scratch, unpreserved, preserved.
    """
    lookup = _Classes(list(classes))
    return replace(log, allocations=tuple(
        replace(a, klass=lookup.classify(a.range)) for a in log.allocations))

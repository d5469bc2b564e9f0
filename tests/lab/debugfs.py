# SPDX-License-Identifier: LGPL-2.1-or-later
"""
memblock debugfs text
---------------------

A test helper of the lab suite: parse ``/sys/kernel/debug/memblock/memory``
and ``reserved`` (only present with ``CONFIG_ARCH_KEEP_MEMBLOCK``; mm/memblock.c
``memblock_debug_show``), the lab's independent oracle for ``kho-inspect
memblock``. One line per region::

       3: 0x0000000100000000..0x000000013fffffff    0 KHO_SCRATCH

index, ``base..base+size-1`` as ``%pa``, the node id (``x`` when
``!numa_valid_node(nid)``), then ``NONE`` or flag names joined by ``|`` in bit
order (``UNKNOWN`` for a bit without a name in the kernel's table).

debugfs abbreviates some flag names; :data:`FLAG_NAMES` maps them to the
``enum memblock_flags`` names without their ``MEMBLOCK_`` prefix, the names
kho-inspect reports. ``reserve_mem_param`` lines are ``name\\t\\t(size)``.
"""

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from kho_inspect.errors import InputError

__all__ = ("FLAG_NAMES", "DebugfsRegion", "parse_regions", "parse_reserve_mem")

# debugfs spelling -> enumerator name without MEMBLOCK_ (memblock.c flagname[]).
FLAG_NAMES = {
    "HOTPLUG": "HOTPLUG",
    "MIRROR": "MIRROR",
    "NOMAP": "NOMAP",
    "DRV_MNG": "DRIVER_MANAGED",
    "RSV_NIT": "RSRV_NOINIT",
    "RSV_KERN": "RSRV_KERN",
    "KHO_SCRATCH": "KHO_SCRATCH",
    "RSV_HUGETLB": "RSRV_HUGETLB",
}
_LINE = re.compile(r"^\s*(\d+): 0x([0-9a-f]+)\.\.0x([0-9a-f]+)\s+(\d+|x) ([A-Z_|]+)$")
_RESERVE = re.compile(r"^(\S+)\t\t\((.+)\)$")


@dataclass(frozen=True)
class DebugfsRegion:
    """One region line: ``nid`` is ``None`` for ``x``; ``flags`` are enum names."""

    index: int
    base: int
    size: int
    nid: Optional[int]
    flags: Tuple[str, ...]


def _flags(text: str) -> Tuple[str, ...]:
    if text == "NONE":
        return ()
    return tuple(FLAG_NAMES.get(name, name) for name in text.split("|"))


def parse_regions(text: str) -> List[DebugfsRegion]:
    """Regions of a ``memblock/memory`` or ``memblock/reserved`` file.

    :raises InputError: on a line that is not a region line.
    """
    regions = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise InputError(f"memblock debugfs line {lineno} is not a region: {line!r}.")
        base, last = int(m.group(2), 16), int(m.group(3), 16)
        nid = None if m.group(4) == "x" else int(m.group(4))
        regions.append(DebugfsRegion(int(m.group(1)), base, last - base + 1, nid,
                                     _flags(m.group(5))))
    return regions


def parse_reserve_mem(text: str) -> List[Tuple[str, str]]:
    """``(name, size text)`` pairs of ``memblock/reserve_mem_param``."""
    out = []
    for line in text.splitlines():
        m = _RESERVE.match(line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Buddy free lists
----------------

The ``kho_inspect.buddy`` module reads the page allocator's free lists
(mm/page_alloc.c): the free blocks of one migratetype as physical ranges,
and the CMA counters of every zone. :func:`read_cma_usage` is what ``kho
scratch`` measures scratch use with: original scratch is ``MIGRATE_CMA``, so
its free part is its intersection with the free blocks of the
``MIGRATE_CMA`` lists (pages cached on per-CPU lists count as in use).

A free list is walked with one ``u64`` read per free block (the list link
inside ``struct page``), never one drgn object per page, and never further
than the zone's ``nr_free`` says it holds.
"""

from typing import Dict, List, Optional

import drgn
from drgn import Program, offsetof, sizeof

from kho_inspect.model.scratch import CmaUsage
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.target import online_pgdats, page0

__all__ = ("FreeListWalk", "read_cma_usage")


def _free_list_offset(prog: Program) -> int:
    page = prog.type("struct page")
    try:
        return offsetof(page, "buddy_list")
    except LookupError:
        # Before Linux kernel commit bf75f200569d ("mm/page_alloc: add
        # page->buddy_list and page->pcp_list") (release not verified; posted
        # June 2022), free pages were linked through page->lru.
        return offsetof(page, "lru")


class FreeListWalk:
    """Collects the free blocks of one migratetype, zone by zone.

    :param migratetype: the ``enum migratetype`` value (``MIGRATE_CMA``).
    :ivar blocks: the free blocks found, as physical ranges.
    :ivar notes: races and damage seen (the list is then approximate).
    """

    def __init__(self, prog: Program, migratetype: int) -> None:
        self.prog = prog
        self.migratetype = migratetype
        self.link = _free_list_offset(prog)
        self.page0 = page0(prog)
        self.page_size = sizeof(prog.type("struct page"))
        self.page_shift = prog["PAGE_SHIFT"].value_()
        self.blocks: List[Range] = []
        self.notes: List[str] = []

    def zone(self, zone: drgn.Object) -> None:
        """Walk ``zone->free_area[order].free_list[migratetype]`` of every order."""
        for order, area in enumerate(zone.free_area):
            head = area.free_list[self.migratetype].address_of_().value_()
            self._walk(head, order, area.nr_free.value_() + 1, zone)

    def _walk(self, head: int, order: int, limit: int, zone: drgn.Object) -> None:
        read = self.prog.read_u64
        entry = read(head)
        seen = 0
        while entry and entry != head:
            seen += 1
            if seen > limit:
                self.notes.append(f"zone {zone.name.string_().decode()} order {order}: the "
                                  "CMA free list is longer than nr_free (the kernel changed "
                                  "while it was read); free memory is approximate.")
                return
            pfn, rem = divmod(entry - self.link - self.page0, self.page_size)
            if rem:
                self.notes.append(f"a CMA free list of order {order} links {entry:#x}, which "
                                  "is not a struct page; free memory is approximate.")
                return
            self.blocks.append(Range(pfn << self.page_shift, 1 << (self.page_shift + order)))
            entry = read(entry)


def read_cma_usage(prog: Program) -> CmaUsage:
    """Free ``MIGRATE_CMA`` blocks and the CMA counters of every zone.

    Reads ``zone->free_area[order].free_list[MIGRATE_CMA]`` of each populated
    zone of each online node, ``zone->cma_pages`` and the zone's
    ``NR_FREE_CMA_PAGES``.
    """
    try:
        cma = prog["MIGRATE_CMA"].value_()
    except LookupError:
        return CmaUsage(None, {}, {}, ("The kernel has no MIGRATE_CMA (CONFIG_CMA=n), so "
                                       "scratch cannot be CMA and its use cannot be measured.",))
    walk = FreeListWalk(prog, cma)
    totals: Dict[Optional[int], int] = {}
    frees: Dict[Optional[int], int] = {}
    page = 1 << walk.page_shift
    try:
        free_item = prog["NR_FREE_CMA_PAGES"]
        for pgdat in online_pgdats(prog):
            nid = pgdat.node_id.value_()
            for zone in pgdat.node_zones:
                if not zone.present_pages.value_():
                    continue
                totals[nid] = totals.get(nid, 0) + zone.cma_pages.value_() * page
                free = max(zone.vm_stat[free_item].counter.value_(), 0)  # zone_page_state()
                frees[nid] = frees.get(nid, 0) + free * page
                walk.zone(zone)
    except (LookupError, AttributeError, drgn.FaultError) as e:
        return CmaUsage(None, totals, frees, (f"The CMA free lists could not be read ({e}), "
                                              "so scratch use is unknown.",))
    return CmaUsage(RangeSet(walk.blocks), totals, frees, tuple(walk.notes))

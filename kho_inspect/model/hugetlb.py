# SPDX-License-Identifier: LGPL-2.1-or-later
"""
hugetlb model
-------------

The ``kho_inspect.model.hugetlb`` module holds the gigantic hugetlb pages of a
kernel (pages of an order above ``MAX_PAGE_ORDER``: 1 GiB on x86_64) and the
hugetlb CMA areas (``hugetlb_cma=``), as :mod:`kho_inspect.hugetlb` reads
them. Nothing here touches drgn; every class round-trips through JSON.

A page's *origin* is where it came from: ``"boot"`` (``memblock_alloc_hugetlb()``
at boot, seen as a ``RSRV_HUGETLB`` reservation where memblock is kept),
``"buddy"`` (``alloc_contig_frozen_pages()`` at run time) or ``"cma"`` (a hugetlb
CMA area); see docs/kernel/hugetlb.md.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from kho_inspect.model.base import JsonModel
from kho_inspect.ranges import Range, RangeSet

__all__ = ("ORIGINS", "HugePage", "HstateSummary", "CmaArea", "HugetlbReport")

ORIGINS = ("boot", "buddy", "cma")


@dataclass(frozen=True)
class HugePage(JsonModel):
    """One gigantic hugetlb folio.

    :param phys: physical address of the head page.
    :param size: ``PAGE_SIZE << order``.
    :param node: NUMA node of the folio (``None`` without NUMA).
    :param origin: ``"boot"``, ``"buddy"`` or ``"cma"``.
    :param state: ``"free"`` (on ``hugepage_freelists``) or ``"in use"``
        (on ``hugepage_activelist``).
    """

    phys: int
    size: int
    node: Optional[int]
    origin: str
    state: str

    @property
    def range(self) -> Range:
        return Range(self.phys, self.size)


@dataclass(frozen=True)
class CmaArea(JsonModel):
    """One range of a ``hugetlb_cma[nid]`` area (``struct cma``)."""

    base: int
    size: int
    node: Optional[int]
    name: Optional[str] = None

    @property
    def range(self) -> Range:
        return Range(self.base, self.size)


@dataclass(frozen=True)
class HstateSummary(JsonModel):
    """The counters of one ``struct hstate`` (``/sys/kernel/mm/hugepages``)."""

    name: str
    size: int
    order: int
    nr_huge_pages: int
    free_huge_pages: int
    surplus_huge_pages: int
    gigantic: bool


@dataclass(frozen=True)
class HugetlbReport(JsonModel):
    """What ``kho-inspect hugetlb`` reports.

    :param pages: every gigantic folio, by address.
    :param cma_areas: the hugetlb CMA areas, per node.
    :param hstates: every hstate, gigantic or not.
    :param notes: what could not be read or decided.
    """

    pages: Tuple[HugePage, ...] = ()
    cma_areas: Tuple[CmaArea, ...] = ()
    hstates: Tuple[HstateSummary, ...] = ()
    notes: Tuple[str, ...] = ()

    def ranges(self, origin: Optional[str] = None) -> RangeSet:
        """The pages (of ``origin`` only, if given) as a set of ranges."""
        return RangeSet(p.range for p in self.pages if origin is None or p.origin == origin)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
hugetlb model
-------------

The ``kho_inspect.model.hugetlb`` module holds the gigantic hugetlb pages of a
kernel (pages of an order above ``MAX_PAGE_ORDER``: 1 GiB on x86_64), the
hugetlb CMA areas (``hugetlb_cma=``) and the counters of every ``struct
hstate``, as :mod:`kho_inspect.hugetlb` reads them. Nothing here touches
drgn; every class round-trips through JSON.

A page's *origin* is where it came from (docs/kernel/hugetlb.md):

``"boot"``
    ``memblock_alloc_hugetlb()`` at boot, seen as a ``RSRV_HUGETLB``
    reservation where memblock is kept, or in a ``memblock=debug`` log;
``"buddy"``
    ``alloc_contig_frozen_pages()`` at run time;
``"cma"``
    a hugetlb CMA area (``HPG_cma`` in the folio, at boot with
    ``hugetlb_cma_only`` or at run time);
``"unknown"``
    boot or buddy: the folio itself does not say, and neither memblock nor
    the boot log was there to tell (``origin_from`` is then ``None``).
"""

from typing import Optional, Tuple

from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel
from kho_inspect.ranges import Range, RangeSet

__all__ = ("ORIGINS", "STATES", "ORIGIN_SOURCES", "HugePage", "HstateNode", "HstateSummary",
           "CmaArea", "HugetlbReport")

ORIGINS = ("boot", "buddy", "cma", "unknown")
STATES = ("free", "in use")
ORIGIN_SOURCES = ("HPG_cma", "hugetlb_cma area", "memblock", "hugetlb_cma", "boot log")
"""What decided an origin (``HugePage.origin_from``): the folio's ``HPG_cma``
bit, its address in a ``hugetlb_cma[]`` area (kernels without ``HPG_cma``),
``memblock.reserved``'s ``RSRV_HUGETLB`` regions, ``hugetlb_cma=`` (which
rules out boot-time pages outside CMA), or the ``memblock=debug`` kernel log."""


@frozen
class HugePage(JsonModel):
    """One gigantic hugetlb folio.

    :param phys: physical address of the head page.
    :param size: ``PAGE_SIZE << order``.
    :param node: NUMA node of the folio (``None`` without NUMA).
    :param origin: one of :data:`ORIGINS`.
    :param state: ``"free"`` (on ``hugepage_freelists[node]``) or ``"in use"``
        (on ``hugepage_activelist``).
    :param hstate: the ``struct hstate``'s name (``hugepages-1048576kB``).
    :param flags: the ``enum hugetlb_page_flags`` bits set in
        ``folio->private``, by enumerator name without ``HPG_``
        (``("cma", "migratable")``); a bit the enum does not name stays a
        number in hex.
    :param origin_from: one of :data:`ORIGIN_SOURCES`, ``None`` when the
        origin is ``"unknown"``.
    """

    phys: int
    size: int
    node: Optional[int]
    origin: str
    state: str
    hstate: Optional[str] = None
    flags: Tuple[str, ...] = ()
    origin_from: Optional[str] = None

    @property
    def range(self) -> Range:
        return Range(self.phys, self.size)


@frozen
class CmaArea(JsonModel):
    """One range of a ``hugetlb_cma[nid]`` area (``struct cma``).

    :param name: the area's ``cma->name`` (``hugetlb0``).
    """

    base: int
    size: int
    node: Optional[int]
    name: Optional[str] = None

    @property
    def range(self) -> Range:
        return Range(self.base, self.size)


@frozen
class HstateNode(JsonModel):
    """One node's counters of a ``struct hstate`` (``*_huge_pages_node[nid]``), as
    ``/sys/devices/system/node/nodeN/hugepages/hugepages-*/`` shows them."""

    node: Optional[int]
    nr_huge_pages: int
    free_huge_pages: int
    surplus_huge_pages: int


@frozen
class HstateSummary(JsonModel):
    """The counters of one ``struct hstate`` (``/sys/kernel/mm/hugepages/*/``).

    :param name: ``h->name`` (``hugepages-1048576kB``).
    :param size: bytes per page.
    :param order: ``h->order``.
    :param gigantic: ``order > MAX_PAGE_ORDER``.
    :param resv_huge_pages: ``h->resv_huge_pages`` (sysfs ``resv_hugepages``).
    :param nodes: per-node counters of every node with memory (none without NUMA).
    """

    name: str
    size: int
    order: int
    nr_huge_pages: int
    free_huge_pages: int
    surplus_huge_pages: int
    gigantic: bool
    resv_huge_pages: Optional[int] = None
    nodes: Tuple[HstateNode, ...] = ()


@frozen
class HugetlbReport(JsonModel):
    """What ``kho-inspect hugetlb`` reports.

    :param pages: every gigantic folio, by address.
    :param cma_areas: the hugetlb CMA areas, per node.
    :param hstates: every hstate, gigantic or not.
    :param notes: what could not be read or decided.
    :param boot_source: what told boot pages from buddy pages: ``"memblock"``,
        ``"hugetlb_cma"``, ``"boot log"``, or ``None`` (nothing had to, or
        nothing could: those pages are ``"unknown"``).
    """

    pages: Tuple[HugePage, ...] = ()
    cma_areas: Tuple[CmaArea, ...] = ()
    hstates: Tuple[HstateSummary, ...] = ()
    notes: Tuple[str, ...] = ()
    boot_source: Optional[str] = None

    def pages_of(self, *origins: str) -> Tuple[HugePage, ...]:
        """The pages of the given origins (all pages if none is given)."""
        return tuple(p for p in self.pages if not origins or p.origin in origins)

    def ranges(self, origin: Optional[str] = None) -> RangeSet:
        """The pages (of ``origin`` only, if given) as a set of ranges."""
        return RangeSet(p.range for p in self.pages_of(*(origin,) if origin else ()))

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
hugetlb view
------------

Sections of ``kho-inspect hugetlb``: the gigantic pages with their range,
node, origin and state; the hugetlb CMA areas with the gigantic pages each
holds; every hstate's counters and their per-node split (the numbers
``/sys/kernel/mm/hugepages/*/`` and
``/sys/devices/system/node/node*/hugepages/*/`` show, to cross-check); notes.
"""

from collections import Counter
from typing import List, Optional, Sequence

from kho_inspect.model.hugetlb import ORIGINS, STATES, HugePage, HugetlbReport
from kho_inspect.render import Section, human_size

__all__ = ("sections",)


def _node(node: Optional[int]) -> str:
    return "-" if node is None else str(node)


def _totals(pages: Sequence[HugePage]) -> List[str]:
    """``boot 2 GiB (1 free), cma 1 GiB (0 free)``: bytes per origin, in ORIGINS order."""
    size: Counter = Counter()
    free: Counter = Counter()
    for p in pages:
        size[p.origin] += p.size
        free[p.origin] += p.state == STATES[0]
    parts = [f"{o} {human_size(size[o])} ({free[o]} free)" for o in ORIGINS if o in size]
    return [f"Total: {', '.join(parts)}."] if parts else []


def _pages(report: HugetlbReport) -> Section:
    several = len({p.hstate for p in report.pages}) > 1
    headers = ("start", "end", "size", "node", "origin", "state", "decided by", "flags")
    rows = [(f"{p.phys:#x}", f"{p.phys + p.size - 1:#x}", human_size(p.size), _node(p.node),
             p.origin, p.state, p.origin_from or "-", ",".join(p.flags) or "-",
             *((p.hstate or "-",) if several else ()))
            for p in report.pages]
    return Section("Gigantic hugetlb pages", headers + (("hstate",) if several else ()), rows,
                   notes=_totals(report.pages))


def _cma(report: HugetlbReport) -> Section:
    rows = []
    for a in report.cma_areas:
        inside = [p for p in report.pages if a.range.covers(p.range)]
        rows.append((a.name or "-", _node(a.node), f"{a.base:#x}", f"{a.base + a.size - 1:#x}",
                     human_size(a.size), len(inside),
                     sum(1 for p in inside if p.state == STATES[0])))
    return Section("hugetlb CMA areas (hugetlb_cma[])",
                   ("name", "node", "start", "end", "size", "gigantic pages", "free"), rows)


def _hstates(report: HugetlbReport) -> List[Section]:
    totals = Section(
        "hstates (/sys/kernel/mm/hugepages)",
        ("hstate", "page size", "gigantic", "nr_hugepages", "free", "resv", "surplus"),
        [(h.name, human_size(h.size), "yes" if h.gigantic else "no", h.nr_huge_pages,
          h.free_huge_pages, "-" if h.resv_huge_pages is None else h.resv_huge_pages,
          h.surplus_huge_pages) for h in report.hstates])
    rows = [(h.name, _node(n.node), n.nr_huge_pages, n.free_huge_pages, n.surplus_huge_pages)
            for h in report.hstates for n in h.nodes]
    if not rows:
        return [totals]
    return [totals, Section("hstates per node (/sys/devices/system/node/node*/hugepages)",
                            ("hstate", "node", "nr_hugepages", "free", "surplus"), rows)]


def sections(report: HugetlbReport) -> List[Section]:
    """The text/Markdown sections of a :class:`~kho_inspect.model.hugetlb.HugetlbReport`."""
    out = [_pages(report)]
    if report.cma_areas:
        out.append(_cma(report))
    out += _hstates(report)
    if report.notes:
        out.append(Section("Notes", notes=list(report.notes)))
    return out

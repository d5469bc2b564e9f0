# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Scratch view
------------

Sections of ``kho-inspect kho scratch``: the scratch areas with their roles,
the memory regions flagged for scratch, the scratch classes with their
migratetypes, the migratetype runs, and what scratch costs per node
(RAM, share, in use, free); notes.
"""

from typing import Any, List, Optional, Sequence

from kho_inspect.model.pageblock import migratetype_bytes
from kho_inspect.model.scratch import CLASSES, NodeUse, ScratchReport
from kho_inspect.render import Section, human_size

__all__ = ("sections",)


def _size(n: Optional[int]) -> str:
    return "-" if n is None else human_size(n)


def _percent(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _areas(report: ScratchReport) -> Section:
    rows = [
        (a.index, a.role, f"{a.addr:#x}", f"{a.addr + a.size - 1:#x}", human_size(a.size),
         ",".join("-" if n is None else str(n) for n in a.nids) or "-")
        for a in report.areas
    ]
    return Section(
        f"Scratch areas ({report.symbols[0]}[:{report.symbols[1]}])",
        ("#", "role", "start", "end", "size", "memblock nid"),
        rows,
    )


def _flagged(report: ScratchReport) -> Section:
    rows = [(f"{r.base:#x}", f"{r.end - 1:#x}", human_size(r.size),
             "-" if r.nid is None else r.nid, "|".join(r.flags)) for r in report.flagged]
    c = report.classes
    names = " or ".join(n for n in (c.scratch_flag, c.unpreserved_flag) if n) or "(none)"
    return Section(f"memblock.memory regions flagged {names}",
                   ("start", "end", "size", "nid", "flags"), rows)


def _classes(report: ScratchReport) -> Section:
    rows: List[Sequence[Any]] = []
    for name in CLASSES:
        ranges = report.classes.get(name)
        mts = migratetype_bytes(report.runs.get(name, ()))
        mt_text = ", ".join(f"{k} {human_size(v)}" for k, v in mts.items()) or "-"
        rows.append((name, len(ranges), human_size(ranges.total), mt_text))
    notes = [f"extended = {report.classes.extended_rule}."]
    if not report.classes.unpreserved_flag:
        notes.append("unpreserved: this kernel has no KHO_SCRATCH_EXT/KHO_UNPRESERVED flag.")
    return Section("Scratch classes", ("class", "ranges", "size", "migratetypes"), rows, notes)


def _runs(report: ScratchReport) -> Section:
    rows = [
        (name, f"{r.base:#x}", f"{r.end - 1:#x}", human_size(r.size), r.migratetype,
         "yes" if r.isolated else "")
        for name in CLASSES for r in report.runs.get(name, ())
    ]
    notes = []
    if report.layout:
        lay = report.layout
        notes.append(f"pageblock order {lay.pageblock_order} ({lay.pageblock_order_source}), "
                     f"{lay.nr_pageblock_bits} bits per pageblock, sections of "
                     f"{human_size(lay.section_size)}.")
    return Section("Pageblock migratetypes", ("class", "start", "end", "size", "migratetype",
                                              "isolated"), rows, notes)


def _cost_row(label: str, n: NodeUse) -> Sequence[Any]:
    return (label, _size(n.ram), _size(n.original), _percent(n.share), _size(n.used),
            _size(n.free), _size(n.extended), _size(n.unpreserved))


def _cost(report: ScratchReport) -> Section:
    rows = [_cost_row("-" if n.node is None else str(n.node), n) for n in report.nodes]
    rows.append(_cost_row("total", report.total))
    cma = report.cma
    notes = [f"RAM is memblock.memory; totalram (managed) is {_size(report.totalram)}."]
    if cma.zone_cma_pages:
        notes.append(f"All CMA (zone->cma_pages): {_size(sum(cma.zone_cma_pages.values()))}, "
                     f"free (NR_FREE_CMA_PAGES): {_size(sum(cma.nr_free_cma_pages.values()))}.")
    return Section("What scratch costs",
                   ("node", "RAM", "scratch", "share", "in use", "free", "extended",
                    "unpreserved"), rows, notes)


def sections(report: ScratchReport) -> List[Section]:
    """The text/Markdown view of a scratch report."""
    out = [_areas(report), _flagged(report), _classes(report), _runs(report), _cost(report)]
    if report.notes:
        out.append(Section("Notes", notes=list(report.notes)))
    return out

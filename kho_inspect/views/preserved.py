# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Preserved-memory view
---------------------

Sections of ``kho-inspect kho preserved``: the preserved ranges with their
order, per-order totals, optionally the radix tree's own pages and the raw
keys, and notes.
"""

from typing import Any, Dict, List, Sequence, Tuple

from kho_inspect.model.preserved import PreservedReport
from kho_inspect.radix import decode_key
from kho_inspect.render import Section, hex_or_none, human_size

__all__ = ("json_object", "sections")


def _ranges(report: PreservedReport) -> Section:
    rows = []
    for phys, size, order in report.ranges:
        blocks = "-" if order is None else size >> (report.page_shift + order)
        rows.append((f"{phys:#x}", f"{phys + size - 1:#x}", human_size(size),
                     "-" if order is None else order, blocks))
    notes = [f"kernel {report.kernel or '?'}, root table {hex_or_none(report.root)}."]
    if report.origin:
        notes.append(f"Snapshot {report.origin.get('file')} of source "
                     f"{report.origin.get('source')} in kernel {report.origin.get('kernel')}.")
    return Section(f"Preserved memory (source: {report.source})",
                   ("start", "end", "size", "order", "blocks"), rows, notes)


def _orders(report: PreservedReport) -> Section:
    totals = report.totals()
    rows = [(order, human_size(1 << (report.page_shift + order)), n,
             human_size(n << (report.page_shift + order)))
            for order, n in report.histogram.items()]
    blocks = "-" if totals["blocks"] is None else totals["blocks"]
    if totals["tree_pages"] is None:
        tree = f"the radix tree is not read from source {report.source}"
    else:
        tree = (f"the tree itself is {totals['tree_pages']} pages "
                f"({human_size(totals['tree_bytes'])})")
    notes = [f"Total: {human_size(totals['bytes'])} in {totals['ranges']} ranges, "
             f"{blocks} blocks; {tree}."]
    return Section("Per order", ("order", "block", "blocks", "bytes"), rows, notes)


def _page_runs(pages: Sequence[int], page_size: int) -> List[Tuple[int, int]]:
    runs: List[Tuple[int, int]] = []
    for p in pages:
        if runs and runs[-1][0] + runs[-1][1] * page_size == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


def _tree_pages(report: PreservedReport) -> Section:
    size = 1 << report.page_shift
    rows = [(f"{p:#x}", f"{p + n * size - 1:#x}", n)
            for p, n in _page_runs(report.tree_pages, size)]
    return Section("Radix tree pages (visit order)", ("start", "end", "pages"), rows)


def _keys(report: PreservedReport) -> Section:
    rows: List[Sequence[Any]] = []
    for key in report.keys or ():
        phys, order = decode_key(key, report.page_shift)
        rows.append((f"{key:#x}", f"{phys:#x}", order))
    return Section("Radix keys (walk order)", ("key", "phys", "order"), rows)


def sections(report: PreservedReport, pages: bool, raw: bool) -> List[Section]:
    """The text/Markdown view of a preserved-memory report."""
    out = [_ranges(report), _orders(report)]
    if pages:
        out.append(_tree_pages(report))
    if raw:
        out.append(_keys(report))
    if report.notes:
        out.append(Section("Notes", notes=list(report.notes)))
    return out




def json_object(report: PreservedReport, raw: bool) -> Dict[str, Any]:
    """The command's JSON: the report's, without the keys unless ``raw``."""
    obj = report.to_json()
    if not raw:
        obj.pop("keys", None)
    return obj

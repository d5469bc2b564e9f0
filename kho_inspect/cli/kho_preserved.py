"""``kho-inspect kho preserved``: the memory a kernel preserves across KHO."""

from typing import Any, List, Optional, Sequence, Tuple

import click

from kho_inspect.cli import Session, output_options, pass_session
from kho_inspect.preserved import SOURCES, PreservedReport, read_preserved
from kho_inspect.radix import decode_key
from kho_inspect.render import Section, emit, hex_or_none, human_size

__all__ = ("preserved",)

PRESERVED_EPILOG = """\b
Examples:
  kho-inspect kho preserved                      # kernel N: the outgoing tree as ranges
  kho-inspect kho preserved --pages --raw        # ... plus the tree's own pages and the keys
  kho-inspect kho preserved --json > n.json      # kernel N: save a snapshot before kexec -e
  kho-inspect kho preserved --from reserved      # kernel N+1: noinit memblock reservations
  kho-inspect kho preserved --from pages         # kernel N+1: head pages with the KHOP magic
  kho-inspect kho preserved --from snapshot n.json
\b
Sources:
  out        kho_out.radix_tree of this kernel (what it hands over if it kexecs now);
             kho-v1 kernels: the chunk list kho_out.preserved_mem_map (after finalize)
  reserved   memblock.reserved regions flagged RSRV_NOINIT and not RSRV_HUGETLB
  pages      head pages whose page->private is KHO_PAGE_MAGIC << 32 | order (not restored)
  snapshot   the --json output of this command, saved in the previous kernel
  in         refused: kho_in.radix_tree dangles after boot (its pages are reused)
"""


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
    notes = [f"Total: {human_size(totals['bytes'])} in {totals['ranges']} ranges, "
             f"{blocks} blocks; the tree itself is {totals['tree_pages']} pages "
             f"({human_size(totals['tree_bytes'])})."]
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


@click.command(epilog=PRESERVED_EPILOG)
@click.option("--from", "source", type=click.Choice(SOURCES), default="out", show_default=True,
              help="Where to read preserved memory from (see Sources below).")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--pages", is_flag=True, help="Also list the radix tree's own pages.")
@click.option("--raw", is_flag=True, help="Also list every radix key (source out).")
@output_options
@pass_session
def preserved(session: Session, source: str, file: Optional[str], pages: bool, raw: bool,
              fmt: str) -> None:
    """Memory preserved across KHO: ranges with their order, per-order totals, tree pages.

    FILE is the snapshot for --from snapshot.
    """
    if file and source != "snapshot":
        raise click.UsageError("FILE is only used with --from snapshot")
    if source == "snapshot" and not file:
        raise click.UsageError("--from snapshot needs FILE (the saved --json output)")
    prog = None if source == "snapshot" else session.program()
    report = read_preserved(prog, source, snapshot=file, keys=raw)
    obj = report.to_json()
    if not raw:
        obj.pop("keys", None)
    emit(fmt, obj, lambda: sections(report, pages, raw and report.keys is not None))

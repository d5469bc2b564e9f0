# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect kho preserved``: the memory a kernel preserves across KHO."""

from typing import Optional

import click

from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.diagnosis import explain_inactive
from kho_inspect.errors import NotKhoKernelError
from kho_inspect.preserved import SOURCES, read_preserved
from kho_inspect.render import emit
from kho_inspect.views.preserved import json_object, sections

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
  snapshot   a `kho-inspect snapshot -o FILE` document, or the --json output of this
             command, saved in the previous kernel
  in         refused: kho_in.radix_tree dangles after boot (its pages are reused)
\b
Real output: docs/examples/kho-preserved.txt.
"""


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
    try:
        report = read_preserved(prog, source, snapshot=file, keys=raw)
    except NotKhoKernelError as e:
        if prog is None or source != "out":
            raise
        raise explain_inactive(prog, e, "Nothing is preserved") from e
    emit(fmt, json_object(report, raw),
         lambda: sections(report, pages, raw and report.keys is not None))

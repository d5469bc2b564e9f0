# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect hugetlb``: where the gigantic hugetlb pages are, and where they came from."""

import click

from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.hugetlb import read_hugetlb
from kho_inspect.render import emit
from kho_inspect.views.hugetlb import sections

__all__ = ("hugetlb",)

EPILOG = """\b
Examples:
  kho-inspect hugetlb                        # every gigantic page: range, node, origin, state
  kho-inspect hugetlb --json                 # {"pages": [{"phys", "size", "node", "origin",
                                             #   "state", ...}], "cma_areas": [...],
                                             #   "hstates": [...], "notes": [...]}
  kho-inspect --core vmcore --vmlinux vmlinux hugetlb --format markdown
\b
Gigantic: an hstate order above MAX_PAGE_ORDER (1 GiB pages on x86_64).
Origin:
  boot     memblock_alloc_hugetlb() at boot: inside a memblock.reserved RSRV_HUGETLB
           region (kernels that keep memblock) or a memblock=debug boot log
  buddy    allocated from the page allocator at run time (nr_hugepages, demotion)
  cma      from a hugetlb_cma= area (HPG_cma in the folio)
  unknown  boot or buddy: memblock was discarded, no hugetlb_cma= rules boot pages
           out, and the kernel log has no memblock=debug lines from boot
State: free (hugepage_freelists[node]) or in use (hugepage_activelist).
The hstate counters are the numbers /sys/kernel/mm/hugepages/*/ shows.
Real output: docs/examples/hugetlb.txt.
"""


@click.command(epilog=EPILOG)
@output_options
@pass_session
def hugetlb(session: Session, fmt: str) -> None:
    """Gigantic hugetlb pages (range, node, origin, free or in use) and hugetlb CMA areas."""
    report = read_hugetlb(session.program())
    emit(fmt, report.to_json(), lambda: sections(report))

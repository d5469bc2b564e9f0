# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect kho scratch``: scratch areas, scratch classes, migratetypes and cost."""

import click

from kho_inspect.activation import inactive_error
from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.diagnosis import diagnose
from kho_inspect.errors import NotKhoKernelError
from kho_inspect.render import emit
from kho_inspect.scratch import scratch_report
from kho_inspect.views import diagnosis as activation_view
from kho_inspect.views.scratch import sections

__all__ = ("scratch",)

SCRATCH_EPILOG = """\b
Examples:
  kho-inspect kho scratch                    # areas, classes, migratetypes, cost per node
  kho-inspect kho scratch --json             # {"areas", "classes", "migratetype", "nodes", ...}
  kho-inspect --core vmcore --vmlinux vmlinux kho scratch --format markdown
\b
Classes:
  original     kho_scratch[] itself: [0] lowmem, [1] global, [2+k] k-th N_MEMORY node;
               must be MIGRATE_CMA
  extended     Linux 7.3: KHO_SCRATCH-flagged memory minus kho_scratch[]; kernels with a
               KHO_SCRATCH_EXT/KHO_UNPRESERVED flag: that memory minus kho_scratch[];
               must not be MIGRATE_CMA
  unpreserved  only on kernels with such a flag: the regions that carry it
\b
"In use" is the original scratch minus its free blocks on the MIGRATE_CMA buddy
free lists; CmaTotal/CmaFree (zone->cma_pages, NR_FREE_CMA_PAGES) cover all CMA.
\b
Real output: docs/examples/kho-scratch.txt.
"""


@click.command(epilog=SCRATCH_EPILOG)
@output_options
@pass_session
def scratch(session: Session, fmt: str) -> None:
    """KHO scratch areas, the scratch classes, their migratetypes and what they cost."""
    prog = session.program()
    try:
        report = scratch_report(prog)
    except NotKhoKernelError as e:
        # A failed attempt's array is no scratch: show why KHO is off instead.
        act = diagnose(prog)
        if act.active or act.state == "not built":
            raise
        emit(fmt, {"activation": act.to_json()}, lambda: activation_view.sections(act))
        raise inactive_error(act, "No scratch areas") from e
    emit(fmt, report.to_json(), lambda: sections(report))

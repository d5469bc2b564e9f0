# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect kho fdt``: the KHO root FDT and its sub-blobs, decoded."""

from typing import Tuple

import click

from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.diagnosis import explain_inactive
from kho_inspect.errors import NotInKernelError, NotKhoKernelError
from kho_inspect.kho_fdt import read_kho_fdt
from kho_inspect.render import emit
from kho_inspect.views.fdt import sections

__all__ = ("fdt",)

FDT_EPILOG = """\b
Examples:
  kho-inspect kho fdt                        # outgoing root FDT (kho_out.fdt) and every blob
  kho-inspect kho fdt --in                   # what the previous kernel handed over
  kho-inspect kho fdt --in --blob kexec-metadata --json
  kho-inspect kho fdt --blob kho_test        # test_kho's folio list behind its chunks
  kho-inspect kho fdt --blob memblock --raw  # the blob's bytes as a hex dump
\b
Known blobs: kexec-metadata (struct kho_kexec_metadata), memblock (memblock-v1,
reserve_mem=), LUO (struct luo_ser), kho_test (kho-test-v1). Other FDT blobs are
shown as device-tree source, anything else as a hex dump. Integer properties are
native-endian u64, not FDT big-endian cells.
\b
Real output: docs/examples/kho-fdt.txt.
"""

@click.command(epilog=FDT_EPILOG)
@click.option("--in", "direction", flag_value="in",
              help="The incoming root FDT (kho_in.fdt_phys; KHO boots only).")
@click.option("--out", "direction", flag_value="out", default=True,
              help="The outgoing root FDT (kho_out.fdt), the default.")
@click.option("--blob", "names", metavar="NAME", multiple=True,
              help="Only this sub-blob (repeatable).")
@click.option("--raw", is_flag=True, help="Show bytes (hex dump; JSON: hex strings) too.")
@output_options
@pass_session
def fdt(session: Session, fmt: str, direction: str, names: Tuple[str, ...], raw: bool) -> None:
    """The KHO root FDT and each sub-blob, decoded (kexec-metadata, memblock, LUO, kho_test)."""
    try:
        report = read_kho_fdt(session.program(), direction, list(names) if names else None)
    except NotInKernelError as e:
        # A name given on the command line: a usage error, worded as click does.
        raise click.BadParameter(f"{e.what[0].lower()}{e.what[1:]} (it has: "
                                 f"{', '.join(e.available or ()) or 'none'})",
                                 param_hint="--blob") from e
    except NotKhoKernelError as e:
        if direction == "in":
            raise
        raise explain_inactive(session.program(), e, "No outgoing root FDT") from e
    emit(fmt, report.to_json(raw), lambda: sections(report, raw, bool(names)))

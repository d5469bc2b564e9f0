# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect kho ...``: KHO state (status, scratch, preserved memory, FDT blobs)."""

import click

__all__ = ("kho",)

KHO_EPILOG = """\b
Examples:
  kho-inspect kho status                   # KHO on? KHO boot? kexec count, ABI, LUO
  kho-inspect kho scratch --json           # scratch areas and derived classes
  kho-inspect kho preserved --pages        # outgoing radix tree as ranges + tree pages
  kho-inspect kho preserved --from reserved   # in kernel N+1: what N handed over
  kho-inspect kho fdt --in --blob kexec-metadata
"""


@click.group(epilog=KHO_EPILOG)
def kho() -> None:
    """Kexec HandOver state: status, scratch, preserved memory, FDT blobs."""


def _register() -> None:
    from kho_inspect.cli.kho_fdt import fdt
    from kho_inspect.cli.kho_preserved import preserved
    from kho_inspect.cli.kho_scratch import scratch
    from kho_inspect.cli.kho_status import status

    for command in (status, scratch, preserved, fdt):
        kho.add_command(command)


_register()

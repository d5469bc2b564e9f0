# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect kho status``: KHO on/off, boot kind, kexec count, FDT ABI, LUO, flags."""

import click

from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.diagnosis import diagnose
from kho_inspect.kho_status import kho_status
from kho_inspect.render import emit
from kho_inspect.views import diagnosis as activation_view
from kho_inspect.views.kho_status import sections

__all__ = ("status",)

STATUS_EPILOG = """\b
Examples:
  kho-inspect kho status                     # KHO on? KHO boot? kexec count, ABI, LUO, flags
  kho-inspect kho status --json              # {"enabled", "kho_boot", "kexec_count", ...}
  kho-inspect --core vmcore --vmlinux vmlinux kho status --format markdown
\b
A KHO boot is one where kho_in.fdt_phys is set (is_kho_boot()); the kexec count
counts kexec boots since the last cold boot (kexec-metadata, kho_in.kexec_count).
\b
Real output: docs/examples/kho-status.txt.
"""


@click.command(epilog=STATUS_EPILOG)
@output_options
@pass_session
def status(session: Session, fmt: str) -> None:
    """KHO on or off, KHO or cold boot, kexec count, FDT ABI, LUO and memblock flags."""
    prog = session.program()
    st = kho_status(prog)
    act = diagnose(prog)  # on, and if not, why: docs/kernel/kho.md#scratch-reservation
    emit(fmt, {**st.to_json(), "activation": act.to_json()},
         lambda: [*sections(st)[:1], *activation_view.sections(act), *sections(st)[1:]])

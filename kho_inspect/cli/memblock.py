# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect memblock``: memblock.memory, memblock.reserved, physmem and reserve_mem=."""

from typing import Optional

import click

from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.memblock import read_memblock
from kho_inspect.model.memblock import flag_name, type_names
from kho_inspect.render import emit
from kho_inspect.target import kernel_release
from kho_inspect.views.memblock import sections

__all__ = ("memblock",)

TYPE_CHOICES = ("memory", "reserved", "physmem", "all")

MEMBLOCK_EPILOG = """\b
Examples:
  kho-inspect memblock                       # memory and reserved, flags by name, totals
  kho-inspect memblock --type reserved --flag RSRV_NOINIT   # after a KHO boot: what N preserved
  kho-inspect memblock --type memory --flag KHO_SCRATCH --json
  kho-inspect --core vmcore --vmlinux vmlinux memblock --format markdown
  kho-inspect memblock --allow-stale         # x86 without ARCH_KEEP_MEMBLOCK: as boot left it
\b
Flags are the kernel's enum memblock_flags names without MEMBLOCK_ (0x80 is
RSRV_HUGETLB in Linux 7.3 but KHO_SCRATCH_EXT in the v1 series); a set bit the
enum does not name shows in hex (0x100). --flag NONE selects regions without
flags. Ends are inclusive, as in /sys/kernel/debug/memblock; nid "-" is no node.
\b
Only kernels with CONFIG_ARCH_KEEP_MEMBLOCK (arm64, powerpc, ...; x86 only with
CONFIG_INTEL_TDX_HOST) maintain memblock after boot. Elsewhere the arrays are
frozen or freed, and kho-inspect refuses them unless --allow-stale is given.
\b
Real output: docs/examples/memblock.txt.
"""


@click.command(epilog=MEMBLOCK_EPILOG)
@click.option("--type", "type_", type=click.Choice(TYPE_CHOICES), default="all",
              show_default=True, help="Which memblock type to show (physmem: s390 only).")
@click.option("--flag", metavar="NAME",
              help="Only regions with this flag: an enum memblock_flags name without "
                   "MEMBLOCK_ (KHO_SCRATCH), NONE, or a bit in hex.")
@click.option("--allow-stale", is_flag=True,
              help="Show arrays that memblock discarded after boot (or that look corrupt), "
                   "marked stale, instead of refusing.")
@output_options
@pass_session
def memblock(session: Session, fmt: str, type_: str, flag: Optional[str],
             allow_stale: bool) -> None:
    """memblock.memory, memblock.reserved and physmem with flags by name, and reserve_mem=."""
    prog = session.program()
    state = read_memblock(prog, allow_stale=allow_stale)
    names = type_names(state, type_)
    wanted = flag_name(state.flags, flag) if flag is not None else None
    emit(fmt, state.select(names, wanted).to_json(),
         lambda: sections(state, names, wanted, kernel_release(prog)))

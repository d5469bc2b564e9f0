#!/usr/bin/env drgn
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run a kho-inspect command inside a drgn session, on drgn's own ``prog``.

For people who live in ``drgn -k`` (or ``drgn -c vmcore``): the target and its
debug info are whatever drgn opened; the arguments are a kho-inspect command.

Examples::

    sudo drgn -k scripts/drgn_kho_inspect.py memblock --type reserved
    drgn -c vmcore -s vmlinux scripts/drgn_kho_inspect.py kho scratch --json
    drgn -c vmcore -s vmlinux scripts/drgn_kho_inspect.py kho preserved --pages

Inside an interactive drgn session the same works with ``%run``-style
``exec(open("scripts/drgn_kho_inspect.py").read())`` after setting
``sys.argv``, or by importing the library directly: the walkers take
``prog`` and return model objects (kho_inspect.model), and their errors name
keyword arguments, not command-line flags::

    >>> from kho_inspect.memblock import read_memblock
    >>> read_memblock(prog).reserved.regions[:3]
    >>> from kho_inspect.scratch import scratch_report
    >>> scratch_report(prog).total
    >>> from kho_inspect.kho_fdt import read_kho_fdt
    >>> read_kho_fdt(prog, "in")   # on a cold boot: "... use direction='out' ..."
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kho_inspect.cli import Session, run  # noqa: E402


def main(argv: list) -> int:
    if not argv or (len(argv) == 1 and argv[0] in ("-h", "--help")):
        print(__doc__.strip())
        return 0
    return run(argv, obj=Session(program_=prog))  # noqa: F821 (prog: drgn's global)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

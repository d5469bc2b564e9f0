#!/usr/bin/env drgn
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Write a kho-inspect report directory (report.md, report.json, memory-map.svg)
about the kernel drgn opened, on drgn's own ``prog``.

The arguments are those of ``kho-inspect report``::

    sudo drgn -k scripts/kho_report.py -o report/ --previous snapshot.json --dmesg
    drgn -c vmcore -s vmlinux scripts/kho_report.py -o report/ --previous n0.json
    drgn -s vmlinux scripts/kho_report.py --help

Exit status as ``kho-inspect report``: 0 every rule passed, 1 a rule failed,
2 the kernel or an input could not be read, 3 usage error.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kho_inspect.drgn_plugin import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(prog, ["report", *sys.argv[1:]]))  # noqa: F821 (prog: drgn's global)

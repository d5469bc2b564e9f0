#!/usr/bin/env drgn
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Check the KHO placement rules on the kernel drgn opened, on drgn's own ``prog``.

The arguments are those of ``kho-inspect check``::

    sudo drgn -k scripts/kho_check.py --previous /var/lib/kho-inspect/snapshot.json --dmesg
    drgn -c vmcore -s vmlinux scripts/kho_check.py --previous n0.json --format json
    drgn -s vmlinux scripts/kho_check.py --list

Exit status as ``kho-inspect check``: 0 every rule that ran passed, 1 a rule
failed, 2 the kernel could not be inspected, 3 usage error.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kho_inspect.drgn_plugin import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(prog, ["check", *sys.argv[1:]]))  # noqa: F821 (prog: drgn's global)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""``python -m kho_inspect`` runs the command line interface."""

from kho_inspect.cli import main

if __name__ == "__main__":
    main()

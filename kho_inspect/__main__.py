# SPDX-License-Identifier: LGPL-2.1-or-later
"""``python -m kho_inspect`` runs the command line interface."""

import gc

if __name__ == "__main__":
    # No garbage collection while the CLI is imported: main() turns it back
    # on once the command is (see kho_inspect.cli._freeze_imports).
    gc.disable()

from kho_inspect.cli import main  # noqa: E402

if __name__ == "__main__":
    main()

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Errors on the command line
--------------------------

The CLI's wording of a :class:`~kho_inspect.errors.KhoInspectError`: the
error's data (see :mod:`kho_inspect.errors`) named with this command line's
flags, so ``alternatives=("snapshot", "reserved")`` given as ``source``
becomes "use --from snapshot FILE or --from reserved".
"""

from typing import Dict, Optional

from kho_inspect.errors import KhoInspectError, Wording

__all__ = ("CliWording", "CLI", "cli_message")


class CliWording(Wording):
    """Keywords of the Python API worded as kho-inspect's flags."""

    # API keyword -> flag, where the two differ by more than "_" -> "-".
    flags: Dict[str, str] = {"source": "--from", "types": "--type", "names": "--blob",
                             "snapshot": "FILE"}
    # A value that needs an argument after it.
    value_arguments: Dict[str, str] = {"source=snapshot": "FILE"}

    def flag(self, key: str) -> str:
        return self.flags.get(key, "--" + key.replace("_", "-"))

    def given(self, key: str) -> str:
        if key == "direction":
            return "--in/--out"
        return self.flag(key)

    def alternative(self, key: str, value: Optional[str]) -> str:
        if key == "direction" and value is not None:
            return f"--{value}"
        if value is None:
            flag, placeholder = self.flag(key), self.placeholders.get(key)
            if placeholder and flag.startswith("-"):
                return f"{flag} {placeholder}"
            return flag
        argument = self.value_arguments.get(f"{key}={value}")
        return f"{self.flag(key)} {value}" + (f" {argument}" if argument else "")


CLI = CliWording()


def cli_message(error: KhoInspectError) -> str:
    """The one sentence the CLI prints for ``error``."""
    return error.render(CLI)

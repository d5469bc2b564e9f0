# SPDX-License-Identifier: LGPL-2.1-or-later
"""
drgn plugin
-----------

The ``kho_inspect.drgn_plugin`` module is kho-inspect's ``drgn.plugins``
entry point (``kho_inspect = kho_inspect.drgn_plugin``): drgn imports it when
it starts, and it registers three commands with drgn's own command framework
(:mod:`drgn.commands`), so a person at a drgn prompt never has to leave it::

    %memblock --type reserved --flag RSRV_NOINIT
    %kho scratch
    %kho preserved --pages --json > /tmp/preserved.json
    %kho_check --previous /var/lib/kho-inspect/snapshot.json --dmesg

Each command runs the kho-inspect command of the same name (``%kho_check`` is
``kho-inspect check``) on drgn's own program, with the same options and
output; drgn adds redirection and pipes. A command is enabled only when
debugging a Linux kernel whose symbols it needs (``memblock``;
``kho_out``), so ``%kho`` does not appear for a kernel built without KHO.

drgn versions without the command framework (before 0.0.33) load the
plugin without error and get no commands; the library works the same at
any drgn prompt::

    from kho_inspect.memblock import read_memblock
    from kho_inspect.scratch import scratch_report
    from kho_inspect.snapshot import read_snapshot
    from kho_inspect.checks import run_checks
    run_checks(read_snapshot(prog)).failed

Set ``DRGN_DISABLE_PLUGINS=kho_inspect`` to turn the plugin off. Where the
package is importable but not installed (on ``PYTHONPATH``, as in the lab's
guest), there is no entry point to find: ``DRGN_PLUGINS=kho_inspect=kho_inspect.drgn_plugin``
loads the module by name (``lab run --drgn-session`` does so in a real session).
"""

import logging
from typing import Any, Callable, Dict, List, Sequence, Tuple

from drgn import Program, ProgramFlags

from kho_inspect.kho import KHO_OUT_SYMBOLS

__all__ = ("COMMANDS", "enabled_when", "register", "run_cli")

logger = logging.getLogger("drgn.plugins.kho_inspect")

COMMANDS: Dict[str, Sequence[str]] = {
    "memblock": ("memblock",),
    "kho": ("kho",),
    "kho_check": ("check",),
}
"""drgn command name -> the kho-inspect command it runs."""

NEEDS: Dict[str, Sequence[str]] = {
    "memblock": ("memblock",),
    "kho": KHO_OUT_SYMBOLS,
    "kho_check": KHO_OUT_SYMBOLS,
}
"""drgn command name -> symbols, one of which the kernel must have."""

DESCRIPTIONS = {
    "memblock": "memblock.memory and memblock.reserved with flags by name (kho-inspect)",
    "kho": "KHO status, scratch areas, preserved memory and FDT blobs (kho-inspect)",
    "kho_check": "check the KHO placement rules on this kernel (kho-inspect check)",
}


def enabled_when(symbols: Sequence[str]) -> Callable[[Program], bool]:
    """An ``enabled=`` callback: a Linux kernel whose debug info has one of
    the global variables ``symbols``."""

    def enabled(prog: Program) -> bool:
        if not prog.flags & ProgramFlags.IS_LINUX_KERNEL:
            return False
        for name in symbols:
            try:
                prog.object(name)
            except LookupError:
                continue
            return True
        return False

    return enabled


def run_cli(prog: Program, argv: List[str]) -> int:
    """Run ``kho-inspect ARGV`` on ``prog`` and return its exit status."""
    # Imported here: drgn loads every plugin when it starts, and the CLI
    # (click, every command) is needed only when a command runs.
    from kho_inspect.cli import Session, run

    return run(argv, obj=Session(program_=prog))


def _usage(name: str) -> Tuple[str, str]:
    sub = " ".join(COMMANDS[name])
    return (f"**{name}** [*kho-inspect {sub} options*]",
            f"Runs ``kho-inspect {sub}`` on this program; ``%{name} --help`` lists the "
            "options.")


def _command(name: str) -> Callable[..., Any]:
    def command(prog: Program, _name: str, args: Sequence[str], **kwargs: Any) -> None:
        run_cli(prog, [*COMMANDS[name], *args])

    command.__name__ = f"_cmd_{name}"
    return command


def register() -> bool:
    """Register the commands with drgn; ``False`` when drgn has no command framework."""
    try:
        from drgn.commands import parse_shell_command
        from drgn.commands.linux import linux_kernel_custom_command
    except ImportError:
        logger.debug("drgn has no command framework; kho-inspect commands not registered")
        return False
    for name in COMMANDS:
        usage, long_description = _usage(name)
        linux_kernel_custom_command(
            name=name, description=DESCRIPTIONS[name], usage=usage,
            long_description=long_description, parse=parse_shell_command,
            enabled=enabled_when(NEEDS[name]),
        )(_command(name))
    return True


REGISTERED = register()

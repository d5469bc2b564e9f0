# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Command batches
---------------

Run several kho-inspect commands in one Python process, so the target's debug
info is loaded once (:func:`kho_inspect.target.open_program` caches the
program): in a TCG guest loading the lab vmlinux takes about half a minute.
The lab's guest scenario calls :func:`run_batch` in its own process; the host
runs it as a script during the ``--cores`` pause::

    python3 -m kho_inspect.cli.batch --out DIR [--command CMD ...] -- --qemu SOCK --vmlinux VMLINUX

Each command's standard output goes to ``<name>.json`` (and, for ``--json``
commands, its text rendering to ``<name>.txt``), its standard error to
``<name>.err``, and every exit code to ``commands.json``. ``<name>`` is
:func:`kho_inspect.lab.commands.command_name` (``kho scratch --json`` gives
``kho-scratch``). Commands arrive with the lab's placeholders already expanded.
"""

import argparse
import contextlib
import json
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kho_inspect.cli import main as cli_main
from kho_inspect.errors import EXIT_CANNOT_INSPECT
from kho_inspect.lab.commands import BATCH_MODULE, DEFAULT_COMMANDS, command_name

__all__ = ("run_batch", "main")


def _invoke(argv: List[str], out_path: Path, err_path: Path) -> int:
    with open(out_path, "w") as out, open(err_path, "w") as err, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return int(cli_main(argv, standalone_mode=False))
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else EXIT_CANNOT_INSPECT
        except Exception:  # a crash is a result to record, not a reason to stop the stage
            traceback.print_exc()
            return EXIT_CANNOT_INSPECT


def run_batch(global_args: Sequence[str], commands: Sequence[str], outdir: Path,
              text_too: bool = True) -> List[Dict[str, Any]]:
    """Run ``commands`` with ``global_args`` in front; returns one record per command.

    Prints one ``KHO-LAB:`` line per command on the process's real standard output
    (the guest's serial console, which the host follows).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    records = []
    for command in commands:
        name = command_name(command)
        argv = [*global_args, *shlex.split(command)]
        start = time.monotonic()
        code = _invoke(argv, outdir / f"{name}.json", outdir / f"{name}.err")
        seconds = time.monotonic() - start
        if text_too and "--json" in argv:
            text_argv = [a for a in argv if a != "--json"]
            _invoke(text_argv, outdir / f"{name}.txt", outdir / f"{name}.txt.err")
        records.append({"command": command, "name": name, "exit_code": code,
                        "seconds": round(seconds, 2)})
        print(f"KHO-LAB: kho-inspect {command} -> exit {code} ({seconds:.1f} s)",
              file=sys.__stdout__, flush=True)
    (outdir / "commands.json").write_text(json.dumps(records, indent=2) + "\n")
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit 0 when every command exited 0, else 1."""
    parser = argparse.ArgumentParser(prog=f"python3 -m {BATCH_MODULE}",
                                     description="Run kho-inspect commands in one process.")
    parser.add_argument("--out", required=True, type=Path, help="directory for the results")
    parser.add_argument("--command", action="append", dest="commands",
                        help="a command to run (repeatable; default: the lab's list)")
    parser.add_argument("global_args", nargs="*", help="kho-inspect options before the command")
    args = parser.parse_args(argv)
    records = run_batch(args.global_args, args.commands or DEFAULT_COMMANDS, args.out)
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

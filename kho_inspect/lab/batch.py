"""
Command batches
---------------

Run several kho-inspect commands in one Python process, so the target's debug
info is loaded once (:func:`kho_inspect.target.open_program` caches the
program): in a TCG guest loading the lab vmlinux takes about half a minute.

Each command's standard output goes to ``<name>.json`` (and, for ``--json``
commands, its text rendering to ``<name>.txt``), its standard error to
``<name>.err``, and every exit code to ``commands.json``. ``<name>`` is the
command words joined by ``-`` (``kho scratch --json`` gives ``kho-scratch``).

Also a script, used by the host during the ``--cores`` pause::

    python3 -m kho_inspect.lab.batch --out DIR -- --qemu SOCK --vmlinux VMLINUX
"""

import argparse
import contextlib
import json
import re
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ("DEFAULT_COMMANDS", "KHO_BOOT_COMMANDS", "batch_argv", "command_name", "run_batch",
           "main")

# The kho-inspect commands every lab stage runs (in the guest and, with --cores, on the host).
DEFAULT_COMMANDS = (
    "memblock --json",
    "kho status --json",
    "kho scratch --json",
    "kho preserved --json",
    "kho fdt --json",
)
# Commands run only in a kernel that was KHO-booted (the sources valid in kernel N+1).
KHO_BOOT_COMMANDS = (
    "kho preserved --from reserved --json",
    "kho preserved --from pages --json",
)
EXIT_CRASHED = 2
# Output options (and whether they take a value) left out of a command's file name.
OUTPUT_OPTIONS = {"--json": False, "--format": True}


def command_name(command: str) -> str:
    """File name stem of a command: its words and option values, output options dropped.

    ``kho scratch --json`` gives ``kho-scratch``; ``kho preserved --from pages --json``
    gives ``kho-preserved-from-pages``.
    """
    words = []
    skip = False
    for word in shlex.split(command):
        if skip:
            skip = False
            continue
        if word in OUTPUT_OPTIONS:
            skip = OUTPUT_OPTIONS[word]
            continue
        words.append(re.sub(r"[^A-Za-z0-9_.]+", "-", word).strip("-"))
    return "-".join(w for w in words if w) or "command"


def _invoke(argv: List[str], out_path: Path, err_path: Path) -> int:
    with open(out_path, "w") as out, open(err_path, "w") as err, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            from kho_inspect.cli import main as cli_main

            return int(cli_main(argv, standalone_mode=False))
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else EXIT_CRASHED
        except Exception:  # a crash is a result to record, not a reason to stop the stage
            traceback.print_exc()
            return EXIT_CRASHED


def run_batch(global_args: Sequence[str], commands: Sequence[str], outdir: Path,
              text_too: bool = True) -> List[Dict[str, Any]]:
    """Run ``commands`` with ``global_args`` in front; returns one record per command."""
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


def batch_argv(outdir: Path, commands: Sequence[str], global_args: Sequence[str]) -> List[str]:
    """The command line that runs ``commands`` in a batch process (see :func:`main`)."""
    argv = [sys.executable, "-m", "kho_inspect.lab.batch", "--out", str(outdir)]
    for command in commands:
        argv += ["--command", command]
    return [*argv, "--", *global_args]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m kho_inspect.lab.batch",
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

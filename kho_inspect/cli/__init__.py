# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Command line interface
----------------------

``kho-inspect`` is a click group. Global options choose the target
(``--core``, ``--qemu``, ``--vmlinux``); each subcommand lives in a module of
this package named after its concept and only wires walkers, checks and
renderers together.

Exit codes: 0 ok, 1 check failures found, 2 bad input (could not inspect, or a usage
error).
"""

import atexit
import gc
import importlib
import logging
import os
import sys
import traceback
from typing import Any, List, Mapping, NoReturn, Optional, Sequence

import click

from kho_inspect import __version__
from kho_inspect.cli.errors import cli_message
from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.errors import (
    EXIT_CANNOT_INSPECT,
    EXIT_OK,
    EXIT_USAGE,
    KhoInspectError,
)
from kho_inspect.target import TargetSpec

__all__ = ("Session", "cli", "main", "run", "exit_process", "output_options", "pass_session")

MAIN_EPILOG = """\b
Targets (debug info is searched in the usual places unless --vmlinux is given):
  kho-inspect memblock                          # the running kernel, via /proc/kcore
  kho-inspect --core vmcore --vmlinux vmlinux memblock
  kho-inspect --qemu /tmp/qmp.sock --vmlinux vmlinux kho scratch
\b
Exit codes: 0 ok, 1 check failures found, 2 bad input or could not inspect.
"""


COMMANDS = {
    "memblock": "kho_inspect.cli.memblock:memblock",
    "kho": "kho_inspect.cli.kho:kho",
    "hugetlb": "kho_inspect.cli.hugetlb:hugetlb",
    "snapshot": "kho_inspect.cli.snapshot:snapshot",
    "check": "kho_inspect.cli.check:check",
    "bootlog": "kho_inspect.cli.bootlog:bootlog",
    "trace": "kho_inspect.cli.trace:trace",
    "report": "kho_inspect.cli.report:report",
    "diff": "kho_inspect.cli.diff:diff",
    "lab": "kho_inspect.cli.lab:lab",
}
"""Each subcommand and where it lives, in ``--help`` order."""


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that command runs.

    Importing every command (the report's SVG library, the checks, the lab)
    would cost more than drgn's own start on a vmcore; ``check`` on a core is
    benchmarked against that (bench/bench_check.py).
    """

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)
        self.freeze_after_import = False

    def list_commands(self, ctx: click.Context) -> List[str]:
        return list(self.lazy) + [c for c in super().list_commands(ctx) if c not in self.lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
            if self.freeze_after_import:
                _freeze_imports()
        return super().get_command(ctx, cmd_name)


def _freeze_imports() -> None:
    """Keep the garbage collector off what the imports made, and turn it back on.

    :func:`main` (a process of its own) turns the collector off until the
    command's module is imported (``python -m kho_inspect`` before anything):
    the modules, classes and functions that imports create live as long as
    the process and are never garbage, yet the collector would walk them
    again and again (~5 ms of ``check``, bench/bench_check.py).
    :func:`gc.freeze` moves them out of its sight; then it runs as usual.
    """
    gc.freeze()
    gc.enable()


@click.group(cls=LazyGroup, lazy=COMMANDS, epilog=MAIN_EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--core", metavar="PATH", help="Inspect a kernel dump (vmcore, ELF, kdump).")
@click.option("--qemu", metavar="SOCKET", help="Inspect a running QEMU guest over QMP.")
@click.option("--vmlinux", metavar="PATH", help="vmlinux with DWARF debug info for the target.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="kho-inspect")
@click.pass_context
def cli(ctx: click.Context, core: Optional[str], qemu: Optional[str],
        vmlinux: Optional[str], debug: bool) -> None:
    """See physical memory across a Kexec HandOver and check placement rules."""
    if core and qemu:
        raise click.UsageError("--core and --qemu are mutually exclusive")
    session = ctx.ensure_object(Session)
    session.spec = TargetSpec(core=core, qemu=qemu, vmlinux=vmlinux)
    session.debug = session.debug or debug
    # drgn logs warnings (e.g. "missing debugging symbols") that the error
    # sentence already explains; show them with --debug only.
    logging.getLogger("drgn").setLevel(logging.WARNING if session.debug else logging.ERROR)




def _wants_debug(argv: Sequence[str], obj: Optional[Session]) -> bool:
    return "--debug" in argv or bool(obj and obj.debug)


def run(argv: Optional[Sequence[str]] = None, obj: Optional[Session] = None) -> int:
    """Run the CLI and return its exit code instead of exiting."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=args, prog_name="kho-inspect", obj=obj, standalone_mode=False)
    except KhoInspectError as e:
        if _wants_debug(args, obj):
            traceback.print_exc()
        click.echo(f"kho-inspect: error: {cli_message(e)}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("kho-inspect: aborted", err=True)
        return EXIT_CANNOT_INSPECT
    except BrokenPipeError:
        return EXIT_OK
    return rv if isinstance(rv, int) else EXIT_OK


def main(argv: Optional[Sequence[str]] = None, obj: Optional[Session] = None,
         standalone_mode: bool = True) -> int:
    """Console entry point: run the CLI and exit with its code.

    With ``standalone_mode=False`` the code is returned instead (batch use).
    """
    if standalone_mode:
        gc.disable()  # until the command is imported (_freeze_imports)
        cli.freeze_after_import = True
    code = run(argv, obj)
    if standalone_mode:
        exit_process(code)
    return code


def exit_process(code: int) -> NoReturn:
    """End the process with status ``code``, skipping the interpreter's teardown.

    What :func:`sys.exit` would do that anyone can see is done first: other
    threads (if any) are waited for, as the interpreter waits for them, by
    exiting the usual way; the :mod:`atexit` handlers run (logging's flush
    among them); standard output and standard error are flushed (if that
    fails, the usual exit reports it and exits 120, as ever). What is skipped
    is freeing every module and object one by one, ~15 ms after a ``check``
    (bench/bench_check.py).
    """
    threading = sys.modules.get("threading")
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)  # CPython's
    if run_exitfuncs is None or (threading is not None and threading.active_count() > 1) \
            or not _own_process():
        sys.exit(code)
    run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:
        sys.exit(code)
    os._exit(code)


def _own_process() -> bool:
    """Whether nothing but kho-inspect runs in this process: no tracer or profiler
    (coverage, pdb, cProfile, which write their results after catching
    :class:`SystemExit`) and a ``__main__`` that is kho-inspect's own entry point
    (``python -m kho_inspect`` or the ``kho-inspect`` script), not a program that
    calls :func:`main` and may catch :class:`SystemExit`."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return False
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None:
        return spec.name == "kho_inspect.__main__"
    return os.path.basename(getattr(main_module, "__file__", "") or "") == "kho-inspect"

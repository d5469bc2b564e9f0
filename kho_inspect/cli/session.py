# SPDX-License-Identifier: LGPL-2.1-or-later
"""
CLI session
-----------

What every ``kho-inspect`` subcommand shares: the :class:`Session` (the
target and, once opened, its program) and the output options. The
subcommand modules import these from here, not from the package, so that
the command group (:mod:`kho_inspect.cli`), which registers them, is the only
module that imports them.
"""

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import click

from kho_inspect.render import FORMATS
from kho_inspect.target import TargetSpec, open_program

if TYPE_CHECKING:  # a type only: the CLI never imports drgn itself
    from drgn import Program

__all__ = ("Session", "output_options", "pass_session")


@dataclass
class Session:
    """Per-invocation state: the target and, once opened, its program.

    Tests and batch runners pass a ready ``program`` (for example a synthetic
    kernel) as click's ``obj``.
    """

    spec: TargetSpec = field(default_factory=TargetSpec)
    debug: bool = False
    program_: "Optional[Program]" = None

    def program(self) -> "Program":
        if self.program_ is None:
            self.program_ = open_program(self.spec)
        return self.program_


pass_session = click.make_pass_decorator(Session, ensure=True)


def output_options(func: Optional[Callable[..., Any]] = None, *,
                   extra: Sequence[str] = ()) -> Any:
    """Add ``--format text|markdown|json`` (plus ``extra`` formats) and ``--json``.

    The wrapped command receives a single ``fmt`` argument. Use it bare
    (``@output_options``) or with formats only that command has
    (``@output_options(extra=("openmetrics",))``).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--format", "fmt_", type=click.Choice((*FORMATS, *extra)), default=None,
                      help="Output format (default text).")
        @click.option("--json", "as_json", is_flag=True, help="Short for --format json.")
        @functools.wraps(func)
        def wrapper(*args: Any, fmt_: Optional[str], as_json: bool, **kwargs: Any) -> Any:
            if as_json and fmt_ not in (None, "json"):
                raise click.UsageError("--json conflicts with --format " + str(fmt_))
            return func(*args, fmt="json" if as_json else (fmt_ or "text"), **kwargs)

        return wrapper

    return decorate(func) if func is not None else decorate

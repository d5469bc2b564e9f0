# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect diff``: what changed between two snapshots (kernel N and N+1)."""

import io
from typing import Any, Callable, List

import click

from kho_inspect.cli.session import output_options
from kho_inspect.diff import diff_document, diff_snapshots
from kho_inspect.redact import Redactor
from kho_inspect.render import Section, dump_json, emit
from kho_inspect.snapshot import load_snapshot_file
from kho_inspect.views.diff import sections

__all__ = ("diff", "redacted_output")

DIFF_EPILOG = """\b
Examples:
  kho-inspect diff n0.json n1.json            # kernel N's snapshot against N+1's
  kho-inspect diff n0.json n1.json --json     # every added and removed range
  kho-inspect diff a.json b.json --format markdown --no-redact
\b
The files are `kho-inspect snapshot -o FILE` output. Compared: the kernels (release,
command line, KHO state, kexec count), the scratch areas and classes, the memory
each kernel preserves and received, across the handover what A preserved against
what B received, memblock regions by base address, and gigantic pages.
\b
Kernel virtual addresses are redacted (shown as <kva-N>) unless --no-redact is
given; physical addresses are shown as they are. Exit status 0 whether or not
the snapshots differ.
\b
Real output: docs/examples/diff.txt.
"""


def redacted_output(fmt: str, obj: Any, build: Callable[[], List[Section]],
                    redactor: Redactor) -> str:
    """What :func:`~kho_inspect.render.emit` prints, with kernel addresses redacted."""
    out = io.StringIO()
    if fmt == "json":
        dump_json(redactor.json(obj), out)
        return out.getvalue()
    emit(fmt, obj, build, out)
    return redactor.text(out.getvalue())


@click.command(epilog=DIFF_EPILOG)
@click.argument("first", metavar="A.json", type=click.Path(dir_okay=False))
@click.argument("second", metavar="B.json", type=click.Path(dir_okay=False))
@click.option("--no-redact", is_flag=True, help="Keep kernel virtual addresses.")
@output_options
def diff(first: str, second: str, no_redact: bool, fmt: str) -> None:
    """What changed between two snapshots: scratch, preserved memory, memblock, gigantic pages."""
    a, b = load_snapshot_file(first, "first"), load_snapshot_file(second, "second")
    names = (a.release, b.release) if a.release and b.release and a.release != b.release \
        else (first, second)
    result = diff_snapshots(a, b, names)
    redactor = Redactor(b.arch or a.arch, enabled=not no_redact)
    click.echo(redacted_output(fmt, diff_document(result), lambda: sections(result), redactor),
               nl=False)

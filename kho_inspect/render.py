# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Rendering
---------

The ``kho_inspect.render`` module turns model data into text tables
(tabulate), Markdown and JSON. Commands build one JSON-able object and a list of
:class:`Section` (a title, a table, preformatted lines, notes); :func:`emit`
prints either.
"""

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, TextIO

from tabulate import tabulate

__all__ = (
    "FORMATS",
    "Section",
    "human_size",
    "hex_or_none",
    "emit",
    "dump_json",
)

FORMATS = ("text", "markdown", "json")

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(n: int) -> str:
    """A size in binary units: exact where it divides (``2 MiB``), else 1 decimal.

    >>> human_size(2 << 20), human_size(0x3ffff000), human_size(1536)
    ('2 MiB', '1.0 GiB', '1.5 KiB')
    """
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if value == int(value):
        return f"{int(value)} {_UNITS[unit]}"
    if round(value, 1) >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1  # 0x3ffff000: "1.0 GiB", not "1024.0 MiB"
    return f"{value:.1f} {_UNITS[unit]}"


def hex_or_none(value: Optional[int]) -> str:
    return "-" if value is None else f"{value:#x}"


@dataclass
class Section:
    """One block of human output: a title, an optional table, notes.

    ``block`` holds preformatted lines (a hex dump, device-tree source) shown
    as they are: verbatim in text, in a fenced code block in Markdown. It
    comes after the table and before the notes.
    """

    title: str
    headers: Sequence[str] = ()
    rows: List[Sequence[Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    block: List[str] = field(default_factory=list)


def dump_json(obj: Any, out: TextIO) -> None:
    json.dump(obj, out, indent=2, sort_keys=False)
    out.write("\n")


def _render_section(sec: Section, fmt: str) -> str:
    parts = []
    if fmt == "markdown":
        parts.append(f"### {sec.title}\n")
    else:
        parts.append(f"{sec.title}\n{'=' * len(sec.title)}")
    if sec.headers:
        if sec.rows:
            tablefmt = "github" if fmt == "markdown" else "simple"
            parts.append(tabulate(sec.rows, headers=list(sec.headers), tablefmt=tablefmt,
                                  disable_numparse=True))
        else:
            parts.append("(none)")
    if sec.block:
        lines = "\n".join(sec.block)
        fence = ("\n" if sec.headers else "") + f"```\n{lines}\n```"  # after a table: a blank line
        parts.append(fence if fmt == "markdown" else lines)
    for note in sec.notes:
        parts.append(f"> {note}" if fmt == "markdown" else note)
    return "\n".join(parts)


def emit(
    fmt: str,
    obj: Any,
    sections: Callable[[], Sequence[Section]],
    out: Optional[TextIO] = None,
) -> None:
    """Print ``obj`` as JSON, or the sections as text or Markdown.

    ``sections`` is a callable so that JSON output never builds tables.
    """
    out = out or sys.stdout
    if fmt == "json":
        dump_json(obj, out)
        return
    blocks = [_render_section(s, fmt) for s in sections()]
    out.write("\n\n".join(blocks) + "\n")

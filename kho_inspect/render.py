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


def _plain_cell(cell: Any) -> Optional[str]:
    """The text tabulate shows for ``cell`` when it is a plain value (``str``,
    ``int`` or ``None``, one line of printable ASCII), else ``None``."""
    if cell is None:
        return ""
    if not isinstance(cell, (str, int)):
        return None
    text = f"{cell}"
    return text.strip() if text.isascii() and text.isprintable() else None


def _simple_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> Optional[str]:
    """``tabulate(rows, headers, tablefmt="simple", disable_numparse=True)`` for a
    table of plain cells (see :func:`_plain_cell`; every column then aligns left),
    else ``None``."""
    if not headers or not all(isinstance(h, str) and h.isascii() and h.isprintable()
                              and h == h.strip() for h in headers):
        return None
    table = []
    for row in rows:
        cells = [_plain_cell(c) for c in row]
        if len(cells) != len(headers) or None in cells:
            return None
        table.append(cells)
    widths = [max([len(h) + 2] + [len(r[i]) for r in table]) for i, h in enumerate(headers)]
    lines = [list(headers), ["-" * w for w in widths], *table]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str], tablefmt: str) -> str:
    """``tabulate(rows, headers, tablefmt, disable_numparse=True)``.

    Plain text tables are drawn here: importing tabulate reads its package
    metadata and costs more than ``check``'s rules (bench/bench_check.py).
    """
    if tablefmt == "simple":
        text = _simple_table(rows, headers)
        if text is not None:
            return text
    from tabulate import tabulate

    return tabulate(rows, headers=list(headers), tablefmt=tablefmt, disable_numparse=True)


def _render_section(sec: Section, fmt: str) -> str:
    parts = []
    if fmt == "markdown":
        parts.append(f"### {sec.title}\n")
    else:
        parts.append(f"{sec.title}\n{'=' * len(sec.title)}")
    if sec.headers:
        if sec.rows:
            parts.append(_table(sec.rows, sec.headers, "github" if fmt == "markdown"
                                else "simple"))
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

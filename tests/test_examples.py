# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every command has a real-output example that its ``--help`` names.

A command is a leaf of the click tree: the top-level commands, ``kho status``,
``kho scratch``, ... and ``lab build``, ``lab run``, ``lab show`` (the ``kho``
and ``lab`` groups themselves only dispatch). Its example is
``docs/examples/<words joined by ->.txt``, for instance ``kho-status.txt``;
docs/examples/README.md describes the format.
"""

import shlex
from pathlib import Path
from typing import Iterator, List, Tuple

import click
import pytest

from kho_inspect.cli import cli, run

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

CommandPath = Tuple[str, ...]


def _leaves(group: click.Group, prefix: CommandPath = ()) -> Iterator[CommandPath]:
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):  # the CLI loads its commands lazily
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _leaves(command, (*prefix, name))
        else:
            yield (*prefix, name)


COMMANDS = list(_leaves(cli))


def _example(path: CommandPath) -> Path:
    return EXAMPLES / f"{'-'.join(path)}.txt"


def _first_command(text: str) -> List[str]:
    """The words of the file's first line, a ``$ kho-inspect ...`` command line,
    up to the end of its first command (``;`` or ``|``)."""
    first = text.split("\n", 1)[0]
    assert first.startswith("$ "), f"first line is not a command line: {first!r}"
    words = shlex.split(first[2:].split(";")[0].split("|")[0])
    assert words and words[0] == "kho-inspect", first
    return words


def _names(words: List[str], path: CommandPath) -> bool:
    """Whether the command words ``path`` occur, in order and adjacent, in ``words``."""
    n = len(path)
    return any(tuple(words[i:i + n]) == path for i in range(1, len(words) - n + 1))


def test_the_tree_has_the_commands_we_document():
    assert {("memblock",), ("kho", "status"), ("kho", "fdt"), ("check",),
            ("lab", "run"), ("lab", "show")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids="-".join)
def test_help_names_an_existing_example(path: CommandPath, capsys):
    assert run([*path, "--help"]) == 0
    example = _example(path)
    assert f"docs/examples/{example.name}" in capsys.readouterr().out, path
    assert example.is_file(), example


@pytest.mark.parametrize("path", COMMANDS, ids="-".join)
def test_example_starts_with_its_command_line(path: CommandPath):
    words = _first_command(_example(path).read_text())
    assert _names(words, path), f"{_example(path).name} does not start with `{' '.join(path)}`"


def test_every_example_file_belongs_to_a_command():
    names = {_example(path).name for path in COMMANDS}
    files = {p.name for p in EXAMPLES.glob("*.txt")}
    assert files <= names, f"example files for no command: {sorted(files - names)}"

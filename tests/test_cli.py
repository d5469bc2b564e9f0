# SPDX-License-Identifier: LGPL-2.1-or-later
"""The CLI's own contract: help with examples, exit codes for usage errors."""

from kho_inspect.cli import run
from kho_inspect.errors import EXIT_USAGE


def test_main_help_names_targets_and_exit_codes(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--core" in out and "--qemu" in out and "--vmlinux" in out
    assert "Exit codes" in out


def test_core_and_qemu_are_exclusive(capsys):
    assert run(["--core", "a", "--qemu", "b", "memblock"]) == EXIT_USAGE
    assert "mutually exclusive" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    assert run(["no-such-command"]) == EXIT_USAGE


def test_every_command_help_shows_examples(capsys):
    for argv in (["memblock"], ["kho"], ["kho", "status"], ["kho", "scratch"],
                 ["kho", "preserved"], ["kho", "fdt"], ["lab"], ["lab", "run"]):
        assert run([*argv, "--help"]) == 0, argv
        out = capsys.readouterr().out
        assert "kho-inspect" in out and "xample" in out, argv

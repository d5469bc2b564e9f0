# SPDX-License-Identifier: LGPL-2.1-or-later
"""The drgn plugin (``%memblock``, ``%kho``, ``%kho_check`` through drgn's own
command framework) and the drgn-runnable scripts, on synthetic kernels."""

import configparser
import contextlib
import importlib.metadata
import io
import json
import runpy
import sys
from pathlib import Path

import drgn
import pytest
from drgn.commands import DEFAULT_COMMAND_NAMESPACE, CommandNotFoundError
from synth.memblock import memblock_kernel

from kho_inspect import drgn_plugin

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def drgn_command(prog: drgn.Program, line: str) -> str:
    """What ``%line`` prints at a drgn prompt."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        DEFAULT_COMMAND_NAMESPACE.run(prog, line, globals={"prog": prog})
    return out.getvalue()


def test_commands_are_registered_with_drgn():
    assert drgn_plugin.REGISTERED
    prog, _ = memblock_kernel("7.3")
    enabled = {name for name, _ in DEFAULT_COMMAND_NAMESPACE.enabled(prog)}
    assert "memblock" in enabled
    # A synthetic kernel without kho_out: %kho and %kho_check are not offered.
    assert not {"kho", "kho_check"} & enabled
    with pytest.raises(CommandNotFoundError):
        DEFAULT_COMMAND_NAMESPACE.lookup(prog, "kho")


def test_commands_need_a_linux_kernel():
    enabled = {name for name, _ in DEFAULT_COMMAND_NAMESPACE.enabled(drgn.Program())}
    assert not {"memblock", "kho", "kho_check"} & enabled


def test_memblock_command_prints_what_the_cli_prints():
    prog, layout = memblock_kernel("7.3")
    doc = json.loads(drgn_command(prog, "memblock --type memory --json"))
    assert [(r["base"], r["size"]) for r in doc["memory"]] == \
        [(r.base, r.size) for r in layout.regions["memory"]]


def test_drgn_redirection_works(tmp_path):
    prog, _ = memblock_kernel("7.3")
    target = tmp_path / "memblock.json"
    assert drgn_command(prog, f"memblock --json > {target}") == ""
    assert "reserved" in json.loads(target.read_text())


def test_help_describes_the_command():
    prog, _ = memblock_kernel("7.3")
    command = DEFAULT_COMMAND_NAMESPACE.lookup(prog, "memblock")
    assert "kho-inspect" in command.description()
    assert "--help" in command.format_help()


def test_enabled_when_symbol_exists():
    prog, _ = memblock_kernel("7.3")
    assert drgn_plugin.enabled_when(("memblock",))(prog)
    assert not drgn_plugin.enabled_when(("kho_out",))(prog)


# --- packaging ---------------------------------------------------------------------------------


def test_entry_point_is_declared():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    points = cfg["options.entry_points"]["drgn.plugins"].split()
    assert points == ["kho_inspect", "=", "kho_inspect.drgn_plugin"]
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="drgn.plugins")}
    assert installed.get("kho_inspect") == "kho_inspect.drgn_plugin", \
        "reinstall the package (pip install -e .) so its entry points are current"


def test_drgn_loads_the_plugin_by_name(monkeypatch):
    """drgn's own loader (DRGN_PLUGINS=name=module) imports the module."""
    from _drgn_util import plugins

    monkeypatch.setenv("DRGN_PLUGINS", "kho_inspect=kho_inspect.drgn_plugin")
    monkeypatch.setenv("DRGN_DISABLE_PLUGINS", "*")
    loaded = dict(plugins._load_plugins())
    assert loaded["kho_inspect"] is drgn_plugin


# --- scripts ---------------------------------------------------------------------------------


def run_script(monkeypatch: pytest.MonkeyPatch, name: str, prog: drgn.Program, *args: str
               ) -> int:
    path = SCRIPTS / name
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), init_globals={"prog": prog}, run_name="__main__")
    return exit_info.value.code


def test_check_script_lists_the_rules(monkeypatch, capsys):
    prog, _ = memblock_kernel("7.3")
    assert run_script(monkeypatch, "kho_check.py", prog, "--list", "--json") == 0
    ids = [r["id"] for r in json.loads(capsys.readouterr().out)]
    assert "scratch-inherited" in ids


def test_report_script_writes_a_report(monkeypatch, tmp_path, capsys):
    prog, _ = memblock_kernel("7.3")
    out = tmp_path / "report"
    code = run_script(monkeypatch, "kho_report.py", prog, "-o", str(out))
    doc = json.loads((out / "report.json").read_text())
    assert code == doc["checks"]["summary"]["exit_status"]
    assert (out / "memory-map.svg").read_text().startswith("<?xml")
    assert "report written to" in capsys.readouterr().out

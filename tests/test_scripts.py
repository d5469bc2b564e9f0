# SPDX-License-Identifier: LGPL-2.1-or-later
"""scripts/drgn_kho_inspect.py runs kho-inspect on the ``prog`` drgn hands a script."""

import json
import runpy
import sys
from pathlib import Path

import pytest
from synth.memblock import memblock_kernel

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "drgn_kho_inspect.py"


def run_script(monkeypatch: pytest.MonkeyPatch, prog, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), init_globals={"prog": prog}, run_name="__main__")
    return exit_info.value.code


def test_script_uses_drgns_prog(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    prog, layout = memblock_kernel("7.3")
    assert run_script(monkeypatch, prog, "memblock", "--type", "memory", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["base"], r["size"]) for r in doc["memory"]] == \
        [(r.base, r.size) for r in layout.regions["memory"]]


def test_script_without_arguments_prints_its_usage(monkeypatch, capsys) -> None:
    prog, _ = memblock_kernel("7.3")
    assert run_script(monkeypatch, prog) == 0
    assert "drgn -k scripts/drgn_kho_inspect.py" in capsys.readouterr().out

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The guest side of the lab (vm/guest/scenario.py) outside a guest: the next
kernel's command line and the commands run right before ``kexec -e``."""

import importlib.util
import json
import types
from pathlib import Path
from typing import List

import pytest

from kho_inspect.lab import vm_dir


@pytest.fixture(scope="module")
def scenario() -> types.ModuleType:
    path = vm_dir() / "guest" / "scenario.py"
    spec = importlib.util.spec_from_file_location("lab_guest_scenario", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kho_boot_reuses_the_command_line(scenario):
    assert scenario.kexec_cmdline_args("console=ttyS0 kho=on\n", "", "") == ["--reuse-cmdline"]


def test_next_stage_words_are_appended(scenario):
    assert scenario.kexec_cmdline_args("console=ttyS0 kho=on", "", "reserve_mem=64M:4K:late") \
        == ["--reuse-cmdline", "--append=reserve_mem=64M:4K:late"]


def test_own_words_are_not_inherited(scenario):
    line = "console=ttyS0 kho=on hugepages=2 reserve_mem=64M:4K:late\n"
    assert scenario.kexec_cmdline_args(line, "reserve_mem=64M:4K:late", "") == \
        ["--append=console=ttyS0 kho=on hugepages=2"]
    assert scenario.kexec_cmdline_args(line, "reserve_mem=64M:4K:late", "quiet") == \
        ["--append=console=ttyS0 kho=on hugepages=2 quiet"]
    with pytest.raises(RuntimeError, match="does not end with"):
        scenario.kexec_cmdline_args("console=ttyS0 xreserve_mem=64M:4K:late",
                                    "reserve_mem=64M:4K:late", "")


def test_before_kexec_commands_run_after_load_and_before_exec(scenario, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    """The hook runs real kho-inspect commands (in this process) between ``kexec -l`` and
    ``kexec -e``, records their exit codes in stage.json before ``kexec -e``."""
    calls: List[List[str]] = []
    seen_at_exec = {}

    def fake_run(argv: List[str], check: bool = False) -> None:
        calls.append(list(argv))
        if argv[:2] == ["kexec", "-e"]:
            seen_at_exec["stage"] = json.loads((tmp_path / "n0" / "stage.json").read_text())
            seen_at_exec["outputs"] = sorted(p.name for p in (tmp_path / "n0" /
                                                                "before-kexec").iterdir())

    monkeypatch.setattr(scenario, "OUT", tmp_path)
    monkeypatch.setattr(scenario, "subprocess", types.SimpleNamespace(run=fake_run))
    cfg = {"hops": 1, "bzImage": "/lab/kernel/bzImage", "vmlinux": "/lab/kernel/vmlinux",
           "before_kexec_commands": {"n0": ["memblock --help"]}}
    stage = scenario.Stage(cfg, 0)
    with pytest.raises(RuntimeError, match="kexec -e returned"):
        stage.kexec()
    assert calls == [["kexec", "-s", "-l", "/lab/kernel/bzImage", "--reuse-cmdline"],
                     ["kexec", "-e"]]
    assert seen_at_exec["stage"]["before_kexec_commands"] == {"memblock --help": 0}
    assert seen_at_exec["stage"]["kexec_loaded"] is True
    assert "memblock-help.json" in seen_at_exec["outputs"]
    assert "commands.json" in seen_at_exec["outputs"]
    assert json.loads((tmp_path / "state.json").read_text()) == {"stage": 1}

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The lab's host side without QEMU: stage commands and their placeholders, the
per-stage command lines, option checks, the guest configuration and the verdicts."""

import json
from pathlib import Path

import pytest

from kho_inspect.errors import LabError
from kho_inspect.lab.commands import (
    BATCH_MODULE,
    BEFORE_KEXEC_COMMANDS,
    DEFAULT_COMMANDS,
    KHO_BOOT_COMMANDS,
    batch_argv,
    command_name,
    expand,
)
from kho_inspect.lab.kernel import Kernel
from kho_inspect.lab.run import (
    GUEST_OUT,
    RunOptions,
    _guest_config,
    _validate,
    expected_cmdline,
    judge_run,
    judge_stage,
    kernel_cmdline,
    parse_size,
    parse_stage_append,
    stage_commands,
)

KERNEL = Kernel(Path("/cache/kernel/k1/bzImage"), Path("/cache/kernel/k1/vmlinux"))


def _opts(**kwargs) -> RunOptions:
    return RunOptions(out=Path("/tmp/out"), **kwargs)


# --- which commands run where -----------------------------------------------------------------

def test_stage_commands_default_lists():
    opts = _opts(hops=2)
    assert stage_commands(opts, "n0").inspect == DEFAULT_COMMANDS
    assert stage_commands(opts, "n1").inspect == DEFAULT_COMMANDS + KHO_BOOT_COMMANDS
    # The snapshot is taken before every kexec; the last stage does not kexec.
    assert [stage_commands(opts, s).before_kexec for s in ("n0", "n1", "n2")] == [
        BEFORE_KEXEC_COMMANDS, BEFORE_KEXEC_COMMANDS, ()]
    assert any(c.startswith("snapshot -o {stage_dir}/") for c in BEFORE_KEXEC_COMMANDS)
    assert any(c.startswith("check --previous {previous_dir}/snapshot.json")
               for c in KHO_BOOT_COMMANDS)


def test_before_kexec_hook_runs_in_every_stage_that_kexecs():
    opts = _opts(hops=2, before_kexec_commands=("snapshot -o {stage_dir}/snapshot.json",))
    config = _guest_config(opts, KERNEL)
    assert config["before_kexec_commands"] == {
        "n0": ["snapshot -o /lab/out/n0/snapshot.json"],
        "n1": ["snapshot -o /lab/out/n1/snapshot.json"],
        "n2": [],  # the last stage does not kexec
    }


def test_previous_stage_hook_expands_per_side():
    """A KHO-boot command names the stage before; guest and host see their own paths."""
    check = "check --previous {previous_dir}/snapshot.json --json"
    opts = _opts(hops=2, kho_boot_commands=KHO_BOOT_COMMANDS + (check,))
    config = _guest_config(opts, KERNEL)
    assert config["stage_commands"]["n0"] == list(DEFAULT_COMMANDS)
    assert config["stage_commands"]["n2"][-1] == \
        "check --previous /lab/out/n1/snapshot.json --json"
    host = expand(stage_commands(opts, "n1").inspect, Path("/srv/lab run"), "n1")
    assert host[-1] == "check --previous '/srv/lab run/n0'/snapshot.json --json"
    assert command_name(host[-1]) == command_name(config["stage_commands"]["n1"][-1]) == \
        "check-previous"


def test_placeholders_are_checked_before_anything_runs():
    with pytest.raises(LabError, match="n0 has no stage before it"):
        _validate(_opts(commands=("check --previous {previous_dir}/s.json",)))
    with pytest.raises(LabError, match=r"\{nope\} is not a lab command placeholder"):
        _validate(_opts(before_kexec_commands=("snapshot -o {nope}",)))


def test_batch_argv_names_the_cli_batch_module():
    argv = batch_argv(Path("/o"), ["memblock --json"], ["--qemu", "S"], python="python3")
    assert argv == ["python3", "-m", BATCH_MODULE, "--out", "/o", "--command",
                    "memblock --json", "--", "--qemu", "S"]


# --- command lines ----------------------------------------------------------------------------

def test_parse_stage_append():
    assert parse_stage_append(("n1=reserve_mem=64M:4K:late", "n1=memblock=debug",
                               "n0= quiet ")) == \
        {"n1": "reserve_mem=64M:4K:late memblock=debug", "n0": "quiet"}
    for bad in ("n1", "n1=", "x1=quiet"):
        with pytest.raises(LabError):
            parse_stage_append((bad,))


def test_stage_append_is_for_its_stage_only():
    opts = _opts(hops=2, append="memblock=debug", stage_append={"n1": "reserve_mem=64M:4K:late"})
    base = kernel_cmdline(opts)
    assert base.endswith(" memblock=debug") and "reserve_mem=64M" not in base
    assert expected_cmdline(opts, "n0") == base
    assert expected_cmdline(opts, "n1") == f"{base} reserve_mem=64M:4K:late"
    assert expected_cmdline(opts, "n2") == base
    assert _guest_config(opts, KERNEL)["stage_append"] == \
        {"n0": "", "n1": "reserve_mem=64M:4K:late", "n2": ""}


def test_stage_append_must_name_a_stage_of_the_run():
    with pytest.raises(LabError, match="has the stages n0, n1"):
        _validate(_opts(hops=1, stage_append={"n2": "quiet"}))


def test_memfd_size():
    assert parse_size("64M", "--memfd-size") == 64 << 20
    assert parse_size("1G", "--memfd-size") == 1 << 30
    assert parse_size("8192", "--memfd-size") == 8192
    assert _guest_config(_opts(memfd_size="128M"), KERNEL)["memfd_bytes"] == 128 << 20
    for bad in ("64X", "6000", "0"):
        with pytest.raises(LabError, match="--memfd-size"):
            _validate(_opts(memfd_size=bad))


# --- verdicts ---------------------------------------------------------------------------------

def _stage(index: int, cmdline: str) -> dict:
    return {"kho_enabled": True, "kho_boot": index > 0, "cmdline": cmdline,
            "test_kho": "restore succeeded" if index % 2 else "preserved",
            "memfd_in": {"verified": True}, "memfd_out": {"preserved": True},
            "kexec_loaded": True, "reserve_mem": {"revived": True, "start": 1}, "errors": []}


def test_judge_stage_checks_the_command_line():
    assert judge_stage(_stage(1, "a  b c\n"), 1, 2, "a b c") == []
    problems = judge_stage(_stage(1, "a b"), 1, 2, "a b c")
    assert problems == ["booted with 'a b', expected 'a b c'"]


def test_judge_run(tmp_path: Path):
    for index in range(2):
        (tmp_path / f"n{index}").mkdir()
        stage = dict(_stage(index, "x"), before_kexec_commands={"snapshot": 0} if not index
                     else {})
        (tmp_path / f"n{index}" / "stage.json").write_text(json.dumps(stage))
    stages = judge_run(tmp_path, 2, False, {}, {"n0": "x", "n1": "y"})
    assert stages["n0"]["verified"] and stages["n0"]["before_kexec"] == {"snapshot": 0}
    assert stages["n1"]["problems"] == ["booted with 'x', expected 'y'"]
    assert stages["n2"] == {"verified": False, "problems": ["the stage never ran"]}


def test_guest_config_paths():
    config = _guest_config(_opts(), KERNEL)
    assert (config["bzImage"], config["vmlinux"]) == ("/lab/kernel/bzImage",
                                                      "/lab/kernel/vmlinux")
    assert GUEST_OUT == "/lab/out"

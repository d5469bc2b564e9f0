# SPDX-License-Identifier: LGPL-2.1-or-later
"""Choosing a lab kernel by name for ``lab run``: the broken variant's word on every
command line, the option checks, ``--help`` and ``lab show``."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from kho_inspect.cli import cli
from kho_inspect.errors import LabError
from kho_inspect.lab.kernel import KERNEL_NAMES, lab_kernel
from kho_inspect.lab.run import (
    RunOptions,
    _validate,
    expected_cmdline,
    kernel_cmdline,
    stage_names,
)
from kho_inspect.views.lab import run_section

BUG = "kho_lab_hugetlb_in_scratch"


def _opts(**kwargs) -> RunOptions:
    return RunOptions(out=Path("/tmp/out"), **kwargs)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_lab_kernel_words_on_every_stage(name: str):
    opts = _opts(kernel=name, hops=2, append="hugepagesz=1G hugepages=2",
                 stage_append={"n0": "kho_scratch=64M,1536M,64M"})
    broken = name == "7.3+unpreserved-broken"
    for stage in stage_names(opts):
        words = expected_cmdline(opts, stage).split()
        assert (BUG in words) is broken, stage
        assert words[-2:] == ["hugepagesz=1G", "hugepages=2"] or stage == "n0"
    # the kernel's words come before --append, which can still override anything
    line = kernel_cmdline(opts)
    assert line.endswith("hugepagesz=1G hugepages=2")
    assert (line.index(BUG) < line.index("hugepagesz=1G")) if broken else BUG not in line


def test_kernel_dir_gets_no_lab_kernel_words(tmp_path: Path):
    opts = _opts(kernel_dir=tmp_path)
    assert BUG not in kernel_cmdline(opts)


def test_kernel_and_kernel_dir_exclude_each_other(tmp_path: Path):
    with pytest.raises(LabError, match=r"--kernel 7\.3\+unpreserved and --kernel-dir both"):
        _validate(_opts(kernel="7.3+unpreserved", kernel_dir=tmp_path))
    _validate(_opts(kernel_dir=tmp_path))  # the default name with a tree of one's own


def test_unknown_kernel_is_refused_before_anything_runs():
    with pytest.raises(LabError, match=r"no kernel called '7\.3\+foo'"):
        _validate(_opts(kernel="7.3+foo"))


def test_cli_refuses_both_and_unknown(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(cli, ["lab", "run", "--out", str(tmp_path / "o"), "--kernel",
                                 "7.3+unpreserved", "--kernel-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "--kernel and --kernel-dir are mutually exclusive" in result.output
    result = runner.invoke(cli, ["lab", "build", "--kernel", "7.4"])
    assert result.exit_code != 0 and "'7.4' is not one of" in result.output


@pytest.mark.parametrize("command", ["run", "build"])
def test_help_names_every_kernel_and_the_bug_word(command: str):
    text = CliRunner().invoke(cli, ["lab", command, "--help"]).output
    assert all(name in text for name in KERNEL_NAMES)
    assert BUG in text


def test_lab_show_notes_the_lab_kernel():
    summary = {"bzImage": "/k/bzImage", "accel": "tcg", "memory_mib": 6144, "cpus": 2,
               "hops": 1, "stages": {}, "stage_append": {},
               "lab_kernel": lab_kernel("7.3+unpreserved-broken").to_json()}
    notes = run_section(summary).notes
    assert any(n.startswith("lab kernel 7.3+unpreserved-broken: ") for n in notes)
    assert f"every stage boots with the lab kernel's words: {BUG}" in notes
    summary["lab_kernel"] = lab_kernel("7.3").to_json()
    assert not any("lab kernel's words" in n for n in run_section(summary).notes)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The lab's ``{results}`` placeholder and the report of every KHO boot: the guest and
the host (``--cores``) write their reports into their own result directories."""

from pathlib import Path

import pytest

from kho_inspect.errors import LabError
from kho_inspect.lab.commands import (
    GUEST_RESULTS,
    HOST_RESULTS,
    KHO_BOOT_COMMANDS,
    command_name,
    expand,
    placeholders,
)
from kho_inspect.lab.run import GUEST_OUT, RunOptions, stage_commands

REPORT = next(c for c in KHO_BOOT_COMMANDS if c.startswith("report "))


def test_results_default_to_the_guests_directory():
    assert placeholders("/lab/out", "n1")["results"] == f"/lab/out/n1/{GUEST_RESULTS}"
    assert placeholders("/srv/run", "n0", "/srv/run/n0/host")["results"] == "/srv/run/n0/host"


def test_the_report_runs_in_every_kho_boot_and_compares_with_the_stage_before():
    opts = RunOptions(out=Path("/tmp/out"), hops=2)
    assert REPORT not in stage_commands(opts, "n0").inspect
    assert REPORT in stage_commands(opts, "n1").inspect
    assert REPORT in stage_commands(opts, "n2").inspect
    [guest] = expand([REPORT], GUEST_OUT, "n2")
    assert guest.startswith(f"report -o {GUEST_OUT}/n2/{GUEST_RESULTS}/report ")
    assert f"--previous {GUEST_OUT}/n1/snapshot.json" in guest


def test_guest_and_host_reports_do_not_collide():
    out = Path("/srv/lab run")
    [guest] = expand([REPORT], out, "n1")
    [host] = expand([REPORT], out, "n1", results=out / "n1" / HOST_RESULTS)
    assert "'/srv/lab run/n1/kho-inspect'/report" in guest
    assert "'/srv/lab run/n1/host'/report" in host
    # the same command: one name for its outputs on both sides
    assert command_name(guest) == command_name(host)


def test_results_is_a_known_placeholder_in_n0():
    assert expand(["report -o {results}/r"], "/o", "n0") == ["report -o /o/n0/kho-inspect/r"]
    with pytest.raises(LabError, match="n0 has no stage before it"):
        expand(["report -o {results}/r --previous {previous_dir}/s.json"], "/o", "n0")

# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho-inspect bootlog: a memblock=debug log, from a file or the target's printk
buffer, classified against the target's scratch classes, a snapshot's, or none."""

import json

import pytest
from synth.handover import N1_LOG, kernel_n, kernel_n1

from kho_inspect.cli import Session, run
from kho_inspect.cli.session import Session as SessionType
from kho_inspect.errors import EXIT_CANNOT_INSPECT, EXIT_OK, EXIT_USAGE, TargetError

ALLOCATION = {"phys": 0xC000_0000, "size": 4096, "caller": "alloc_node_data",
              "flags": ["RSRV_KERN"], "in_window": True, "class": "original",
              "request": "memblock_alloc_try_nid", "flags_value": 0x20, "nid": None, "line": 5}


@pytest.fixture(scope="module")
def n1():
    return kernel_n1(kernel_n())


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "console.log"
    path.write_text("".join(f"[    0.{i:06d}] {line}\n" for i, line in enumerate(N1_LOG)))
    return path


def _json(capsys, session, *argv, code=EXIT_OK):
    assert run(["bootlog", *argv, "--json"], session) == code
    return json.loads(capsys.readouterr().out)


def test_dmesg_is_classified_against_the_target(capsys, n1):
    obj = _json(capsys, Session(program_=n1.prog), "--dmesg")
    assert obj["window"] == {"start_line": 3, "end_line": 6, "closed": True}
    assert obj["allocations"] == [ALLOCATION]
    assert set(obj["classes"]) == {"original", "extended", "first-mib", "preserved"}
    assert obj["notes"] == [] and obj["truncated"] is False


def test_a_file_with_the_target_of_the_same_kernel(capsys, n1, log_file):
    obj = _json(capsys, Session(program_=n1.prog), str(log_file))
    assert obj["allocations"] == [ALLOCATION]


def test_a_file_of_another_kernel_is_not_classified(capsys, n1, tmp_path):
    other = tmp_path / "other.log"
    other.write_text("\n".join(line.replace("7.3.4-n1", "6.19.0") for line in N1_LOG))
    obj = _json(capsys, Session(program_=n1.prog), str(other))
    assert obj["allocations"][0]["class"] == "unknown"
    assert obj["allocations"][0]["flags"] == ["0x20"]
    assert "The log is of kernel 6.19.0 and the target runs 7.3.4-n1" in obj["notes"][0]


def test_a_file_without_any_target_keeps_hex_flags(capsys, log_file, monkeypatch):
    def unavailable(self):
        raise TargetError("Cannot open /proc/kcore: permission denied (run as root)")

    monkeypatch.setattr(SessionType, "program", unavailable)
    obj = _json(capsys, Session(), str(log_file))
    assert obj["allocations"][0]["class"] == "unknown"
    assert obj["allocations"][0]["flags"] == ["0x20"]
    assert obj["notes"][0].startswith("No target could be opened (Cannot open /proc/kcore")
    # An explicit target that cannot be opened is an error, not a fallback.
    monkeypatch.undo()
    assert run(["--core", "/nonexistent/vmcore", "bootlog", str(log_file)]) == (
        EXIT_CANNOT_INSPECT)


def test_a_snapshot_gives_names_and_classes_offline(capsys, n1, log_file, tmp_path):
    snap = tmp_path / "n1.json"
    assert run(["snapshot", "-o", str(snap)], Session(program_=n1.prog)) == EXIT_OK
    capsys.readouterr()
    argv = ["--core", "/nonexistent/vmcore", "bootlog", str(log_file), "--snapshot", str(snap),
            "--json"]  # the core is never opened
    assert run(argv) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["allocations"] == [ALLOCATION]


def test_text_view(capsys, n1, log_file):
    assert run(["bootlog", str(log_file)], Session(program_=n1.prog)) == EXIT_OK
    out = capsys.readouterr().out
    assert "From line 3 ('KHO: found kexec handover data.') to line 6: 1 memblock " in out
    assert "alloc_node_data" in out and "original" in out
    assert run(["bootlog", str(log_file), "--all", "--format", "markdown"],
               Session(program_=n1.prog)) == EXIT_OK
    assert "### memblock allocations and reservations" in capsys.readouterr().out


def test_stdin(capsys, n1, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(N1_LOG)))
    obj = _json(capsys, Session(program_=n1.prog), "-")
    assert obj["allocations"] == [ALLOCATION]


@pytest.mark.parametrize("argv, code, error", [
    ([], EXIT_USAGE, "give a log FILE or --dmesg"),
    (["x.log", "--dmesg"], EXIT_USAGE, "give a log FILE or --dmesg"),
    (["/nonexistent/x.log"], EXIT_CANNOT_INSPECT, "Cannot read /nonexistent/x.log"),
])
def test_bad_arguments(capsys, n1, argv, code, error):
    assert run(["bootlog", *argv], Session(program_=n1.prog)) == code
    assert error in capsys.readouterr().err

# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho-inspect snapshot: every section read on its own, the document, and the
readers that take it back (check --previous, kho preserved --from snapshot)."""

import json
from pathlib import Path

import pytest
from synth.handover import AREAS, FOO, GIB, MIB, N_BLOCKS, disabled_kernel, kernel_n, kernel_n1
from synth.kernel import SynthKernel

from kho_inspect.cli import Session, run
from kho_inspect.errors import EXIT_CANNOT_INSPECT, EXIT_OK, InputError
from kho_inspect.model.snapshot import SNAPSHOT_SCHEMA, SNAPSHOT_VERSION, load_snapshot_document
from kho_inspect.ranges import Range
from kho_inspect.snapshot import NOT_READ, SECTIONS, load_snapshot_file, read_snapshot


@pytest.fixture(scope="module")
def n():
    return kernel_n()


@pytest.fixture(scope="module")
def snap_n(n):
    return read_snapshot(n.prog)


def test_kernel_n_has_every_section_it_should(snap_n):
    s = snap_n
    assert s.release == "7.3.4-n0" and s.arch == "x86_64" and s.page_shift == 12
    assert s.command_line.startswith("console=ttyS0 kho=on")
    assert s.activation.state == "active" and s.activation.requested_by == (
        "kho=on on the command line")
    assert s.status.kho_boot is False and s.memblock is not None
    assert [(a.addr, a.size) for a in s.scratch.areas] == AREAS
    assert s.memory_nodes == (0, 1) and s.numa is True
    assert (s.scratch_alignment, s.low_address_limit) == (4 * MIB, 0xFFFF_FFFF)
    assert {p for p, _, _ in s.preserved_out.ranges} == {p for p, _ in N_BLOCKS}
    assert s.preserved_out.tree_pages and s.fdt_out.compatible == "kho-v4"
    assert s.fdt_out.kexec_metadata.kexec_count == 1
    assert [(e.name, e.start, e.size) for e in s.fdt_out.reserve_mem] == [FOO]
    assert s.image == Range(16 * MIB, 32 * MIB)
    assert [(r.name, r.start, r.size) for r in s.reserve_mem] == [FOO]
    assert s.taken_from == "vmcore"  # not a live kernel


def test_missing_sections_say_why(snap_n):
    m = snap_n.missing
    assert m["preserved_in"].startswith("not booted through KHO")
    assert m["fdt_in"].startswith("not booted through KHO")
    assert m["initrd"] == ("the debug info has neither boot_params nor initrd_start, so where "
                           "the initrd was is unknown")
    assert "hugetlb" in m
    assert set(m) <= set(SECTIONS) and not snap_n.corrupt
    for name in ("preserved_in", "fdt_in", "initrd", "hugetlb"):
        assert getattr(snap_n, name) is None and snap_n.why_missing(name) == m[name]


def test_the_document_round_trips(snap_n):
    doc = json.loads(json.dumps(__import__("kho_inspect.model.snapshot", fromlist=["x"])
                                .snapshot_document(snap_n)))
    assert (doc["schema"], doc["version"]) == (SNAPSHOT_SCHEMA, SNAPSHOT_VERSION)
    assert load_snapshot_document(doc) == snap_n


def test_only_the_sections_asked_for(n):
    s = read_snapshot(n.prog, sections=("status", "scratch"))
    assert s.status is not None and s.memblock is None
    assert s.missing["memblock"] == NOT_READ and s.missing["preserved_out"] == NOT_READ
    # The scratch report does not wait for a diagnosis it was not asked for.
    assert s.scratch is None and "whether KHO is active is not known" in s.missing["scratch"]
    with pytest.raises(ValueError, match="no such snapshot sections"):
        read_snapshot(n.prog, sections=("bogus",))


def test_one_broken_section_does_not_lose_the_others(n, monkeypatch):
    def boom(prog):
        raise RuntimeError("a bug")

    monkeypatch.setattr("kho_inspect.snapshot.image_range", boom)
    monkeypatch.setattr("kho_inspect.snapshot._hugetlb", lambda prog: None)
    s = read_snapshot(n.prog)
    assert s.missing["image"] == "reading it failed unexpectedly (RuntimeError: a bug)"
    assert s.preserved_out is not None and s.scratch is not None
    with pytest.raises(RuntimeError):
        read_snapshot(n.prog, strict=True)


def test_a_corrupt_tree_goes_to_corrupt(n, monkeypatch):
    from kho_inspect.errors import CorruptTreeError

    def corrupt(prog):
        raise CorruptTreeError("root[3]: points outside RAM")

    monkeypatch.setattr("kho_inspect.snapshot.read_outgoing", corrupt)
    s = read_snapshot(n.prog)
    assert s.preserved_out is None and s.corrupt == {"preserved_out": "root[3]: points outside RAM"}
    assert s.why_missing("preserved_out") == "root[3]: points outside RAM"


def test_kho_boot_reads_the_incoming_side(n):
    from kho_inspect.printk import read_kernel_log

    n1 = kernel_n1(n)
    # With KHO active the printk buffer is not decoded (it costs as much as loading the
    # debug info); a log the caller already read (check --dmesg) is used.
    assert read_snapshot(n1.prog).activation.log == ()
    s = read_snapshot(n1.prog, log=read_kernel_log(n1.prog))
    assert s.kho_boot and s.fdt_in.compatible == "kho-v4"
    assert s.fdt_in.mem_map_phys == n.radix_root
    assert s.preserved_in.source == "reserved" and len(s.preserved_in.ranges) == len(N_BLOCKS)
    assert s.scratch.classes.extended.total == 3 * GIB + GIB - 64 * MIB - 256 * MIB - 128 * MIB \
        - 128 * MIB
    assert s.activation.state == "active" and s.activation.sizing is None
    # Given the log, the snapshot keeps the kernel's KHO lines even when KHO is active.
    assert s.activation.log == ("KHO: found kexec handover data.",
                                "liveupdate: Retrieved live update data, liveupdate number: 1")


def test_discarded_memblock_is_none_with_the_reason(n):
    s = read_snapshot(kernel_n1(n, generation="discarded").prog)
    assert s.memblock is None and "memblock_discard()" in s.missing["memblock"]
    assert "memblock not kept" in s.missing["preserved_in"]
    assert s.scratch is not None and s.scratch.memblock_error is not None
    assert s.memblock_flags.has("KHO_SCRATCH")  # from DWARF all the same
    assert s.reserve_mem  # the reserve_mem table is ordinary data


def test_a_failed_scratch_reservation_is_evidence_not_scratch():
    s = read_snapshot(disabled_kernel().prog)
    assert s.activation.state == "disabled" and s.scratch is None
    assert s.missing["scratch"] == (
        "KHO was requested but is disabled on this kernel (the activation says why); "
        "kho_scratch[] holds a failed attempt, kept as sizing evidence")
    needs = {n.area: n for n in s.activation.sizing.needs}
    assert needs["lowmem"].needed == 212 * MIB and needs["global"].reserved is False
    assert s.preserved_out is None and "disabled on this kernel" in s.missing["preserved_out"]
    assert s.fdt_out is None and s.memblock is None


def test_a_kernel_without_kho():
    s = read_snapshot(SynthKernel().prog)
    assert s.activation.state == "not built" and s.status is None
    assert "CONFIG_KEXEC_HANDOVER=n" in s.missing["status"]


# --- the command and the readers of its file -------------------------------------------------


def _run(prog, *argv):
    return run(list(argv), Session(program_=prog))


def test_cli_writes_the_document_and_says_what_it_lacks(n, tmp_path, capsys):
    out = tmp_path / "n0.json"
    assert _run(n.prog, "snapshot", "-o", str(out)) == EXIT_OK
    err = capsys.readouterr().err
    assert err.startswith(f"kho-inspect: snapshot written to {out}: kernel 7.3.4-n0; KHO active")
    assert "4 preserved ranges" in err and "without fdt_in, hugetlb" in err
    doc = json.loads(out.read_text())
    assert doc["schema"] == SNAPSHOT_SCHEMA and doc["snapshot"]["release"] == "7.3.4-n0"
    assert load_snapshot_file(str(out)).preserved_out is not None
    assert not list(tmp_path.glob(".kho-inspect-*"))  # the temporary file was renamed


def test_cli_to_stdout(n, capsys):
    assert _run(n.prog, "snapshot", "-o", "-") == EXIT_OK
    out, err = capsys.readouterr()
    assert json.loads(out)["snapshot"]["activation"]["state"] == "active" and not err


def test_cli_unwritable_file_is_exit_2(n, capsys, tmp_path):
    assert _run(n.prog, "snapshot", "-o", str(tmp_path / "no" / "such.json")) == (
        EXIT_CANNOT_INSPECT)
    assert "Cannot write" in capsys.readouterr().err


def test_kho_preserved_reads_the_snapshot_document(n, tmp_path, capsys):
    out = tmp_path / "n0.json"
    assert _run(n.prog, "snapshot", "-o", str(out)) == EXIT_OK
    capsys.readouterr()
    assert run(["kho", "preserved", "--from", "snapshot", str(out), "--json"]) == EXIT_OK
    obj = json.loads(capsys.readouterr().out)
    assert obj["source"] == "snapshot" and len(obj["ranges"]) == len(N_BLOCKS)
    assert obj["snapshot"] == {"file": str(out), "source": "out", "kernel": "7.3.4-n0"}
    assert obj["tree_pages"]


def test_kho_preserved_refuses_a_snapshot_without_preserved_memory(tmp_path, capsys):
    out = tmp_path / "off.json"
    assert _run(disabled_kernel().prog, "snapshot", "-o", str(out)) == EXIT_OK
    capsys.readouterr()
    assert run(["kho", "preserved", "--from", "snapshot", str(out)]) == EXIT_CANNOT_INSPECT
    assert "holds no outgoing preserved memory: KHO was requested but is disabled" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("content, error", [
    (None, "Cannot read the snapshot"), ("{", "is not JSON"),
    ('{"schema": "other"}', "is not a kho-inspect/snapshot document"),
    ('{"schema": "kho-inspect/snapshot", "version": 99}', "upgrade kho-inspect"),
])
def test_load_snapshot_file_errors(tmp_path: Path, content, error):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=error):
        load_snapshot_file(str(path))

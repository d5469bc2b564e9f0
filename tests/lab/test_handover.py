# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Assertions on the lab's handover run (see conftest.py): real Linux 7.3, real
KHO, real kexec, real preserved memory. Oracles are independent of kho-inspect
wherever the kernel offers one: debugfs memblock and kho files, dmesg, the
guest's /proc/self/pagemap, the memfd's bytes.
"""

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import pytest

from kho_inspect.lab.commands import batch_argv, expand
from kho_inspect.lab.run import RunOptions, stage_commands
from kho_inspect.ranges import Range, RangeSet

from .conftest import HOPS, STAGE_APPEND, STAGES, LabRun
from .debugfs import parse_regions, parse_reserve_mem

pytestmark = pytest.mark.lab
PAGE = 4096


def _stage_commands(stage: str, out: Path = Path("/lab/out"),
                    results: Optional[Path] = None) -> List[str]:
    """What the lab run in conftest.py ran in ``stage`` after copying debugfs (its default
    command lists), placeholders expanded for the run directory seen as ``out`` and the
    outputs in ``results``."""
    return expand(stage_commands(RunOptions(out=out, hops=HOPS), stage).inspect, out, stage,
                  results)


@pytest.fixture(scope="session")
def core(lab: LabRun) -> Dict[str, Path]:
    """Run every stage's commands against its saved vmcore on the host (``--core``)."""
    dirs = {}
    for stage in STAGES:
        vmcore = lab.stage(stage) / "vmcore"
        assert vmcore.is_file(), f"{stage}: no vmcore saved"
        outdir = lab.stage(stage) / "core"
        argv = batch_argv(outdir, _stage_commands(stage, lab.out, outdir),
                          ["--core", str(vmcore), "--vmlinux", lab.vmlinux])
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
        dirs[stage] = outdir
    return dirs


def _core_json(core: Dict[str, Path], stage: str, command: str) -> Any:
    path = core[stage] / f"{command}.json"
    err = core[stage] / f"{command}.err"
    assert path.stat().st_size, f"{stage} --core {command}: {err.read_text()[-2000:]}"
    return json.loads(path.read_text())


def _regions(objs: Iterable[Dict[str, Any]]) -> List[tuple]:
    return [(r["base"], r["size"], r["nid"], tuple(r["flags"])) for r in objs]


def _ranges(objs: Iterable[Dict[str, Any]], base: str = "phys") -> RangeSet:
    return RangeSet(Range(r[base], r["size"]) for r in objs)


# --- the run ----------------------------------------------------------------------------------

def test_run_verified_every_stage(lab: LabRun) -> None:
    lab.assert_verified(STAGES)
    assert lab.summary["bzImage"] and lab.summary["vmlinux"]


def test_kho_boot_chain(lab: LabRun) -> None:
    for index, stage in enumerate(STAGES):
        st = lab.stage_json(stage)
        assert st["kho_enabled"] is True
        assert st["kho_boot"] is (index > 0), stage
        assert (lab.stage(stage) / "kho" / "out").is_dir()
        assert (lab.stage(stage) / "kho" / "in").is_dir() is (index > 0)


def test_stage_append_only_in_its_stage(lab: LabRun) -> None:
    """n1 boots with its --stage-append words; n2 (kexec --reuse-cmdline from n1) without."""
    base = lab.summary["cmdline"]
    stage, words = STAGE_APPEND
    for name in STAGES:
        expected = f"{base} {words}" if name == stage else base
        assert lab.stage_json(name)["cmdline"] == expected, name


def test_test_kho_restore_succeeded_in_n1(lab: LabRun) -> None:
    dmesg = (lab.stage("n1") / "dmesg.txt").read_text()
    assert "test_kho: KHO restore succeeded" in dmesg
    assert "KHO restore failed" not in dmesg


@pytest.mark.parametrize("stage", STAGES[1:])
def test_memfd_bytes_survive_kexec(lab: LabRun, stage: str) -> None:
    index = int(stage[1:])
    sent = lab.stage_json(f"n{index - 1}")["memfd_out"]
    got = lab.stage_json(stage)["memfd_in"]
    assert got["verified"] is True and got["bad_blocks"] == 0
    assert (got["size"], got["sha256"]) == (sent["size"], sent["sha256"])


def test_every_command_succeeded(lab: LabRun) -> None:
    for stage in STAGES:
        st = lab.summary["stages"][stage]
        assert st["commands"] and all(c == 0 for c in st["commands"].values()), (stage, st)
        assert st["host"] and all(c == 0 for c in st["host"]["commands"].values()), \
            (stage, st["host"])
        assert set(st["commands"]) == set(_stage_commands(stage))


def test_hugetlb_gigantic_pages_allocated(lab: LabRun) -> None:
    for stage in STAGES:
        counters = lab.stage_json(stage)["hugepages"]["hugepages-1048576kB"]
        assert counters["nr_hugepages"] == 2, stage


# --- memblock: in-guest vs debugfs vs host ----------------------------------------------------

@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("mtype", ("memory", "reserved"))
def test_memblock_equals_debugfs(lab: LabRun, stage: str, mtype: str) -> None:
    text = (lab.stage(stage) / "memblock" / mtype).read_text()
    oracle = [(r.base, r.size, r.nid, r.flags) for r in parse_regions(text)]
    tool = lab.guest(stage, "memblock")
    assert oracle, f"{stage}: debugfs memblock/{mtype} is empty"
    assert _regions(tool[mtype]) == oracle
    assert tool["stale"] is False


def test_memblock_flags_from_debug_info(lab: LabRun) -> None:
    flags = lab.guest("n0", "memblock")["flags"]
    assert flags["KHO_SCRATCH"] == 0x40 and flags["RSRV_HUGETLB"] == 0x80
    assert "KHO_SCRATCH_EXT" not in flags and "KHO_UNPRESERVED" not in flags
    reserved = lab.guest("n1", "memblock")["reserved"]
    assert any("RSRV_HUGETLB" in r["flags"] for r in reserved), "no gigantic page reservation"
    assert any("RSRV_NOINIT" in r["flags"] for r in reserved), "no KHO noinit reservation"


@pytest.mark.parametrize("stage", STAGES)
def test_reserve_mem_table(lab: LabRun, stage: str) -> None:
    table = lab.guest(stage, "memblock")["reserve_mem"]
    param = parse_reserve_mem((lab.stage(stage) / "memblock" / "reserve_mem_param").read_text())
    assert [name for name, _ in param] == [r["name"] for r in table]
    mine = next(r for r in table if r["name"] == "khoinspect")
    assert mine["size"] == 16 << 20 and mine["start"] % (2 << 20) == 0
    assert mine["start"] == lab.stage_json(stage)["reserve_mem"]["start"]


@pytest.mark.parametrize("stage", STAGES)
def test_core_equals_guest(lab: LabRun, core: Dict[str, Path], stage: str) -> None:
    guest, host = lab.guest(stage, "memblock"), _core_json(core, stage, "memblock")
    for key in ("memory", "reserved", "flags", "reserve_mem", "stale"):
        assert host[key] == guest[key], key
    assert _core_json(core, stage, "kho-preserved")["ranges"] == \
        lab.guest(stage, "kho-preserved")["ranges"]
    assert _core_json(core, stage, "kho-scratch")["areas"] == \
        lab.guest(stage, "kho-scratch")["areas"]


@pytest.mark.parametrize("stage", STAGES[1:])
def test_core_check_equals_guest(lab: LabRun, core: Dict[str, Path], stage: str) -> None:
    """The host's check of the vmcore, with the snapshot the guest took before its kexec,
    judges every rule as the guest did."""
    from .test_check import CHECK, statuses

    assert statuses(_core_json(core, stage, CHECK)) == statuses(lab.guest(stage, CHECK))


@pytest.mark.parametrize("stage", STAGES)
def test_qemu_equals_guest(lab: LabRun, stage: str) -> None:
    guest, host = lab.guest(stage, "memblock"), lab.host(stage, "memblock")
    for key in ("memory", "reserved", "flags", "reserve_mem"):
        assert host[key] == guest[key], key
    assert lab.host(stage, "kho-preserved")["ranges"] == lab.guest(stage, "kho-preserved")["ranges"]


# --- KHO state (issue 4) ----------------------------------------------------------------------

def _debugfs_scratch(lab: LabRun, stage: str) -> List[tuple]:
    d = lab.stage(stage) / "kho" / "out"
    phys = [int(x, 16) for x in (d / "scratch_phys").read_text().split()]
    size = [int(x, 16) for x in (d / "scratch_len").read_text().split()]
    return list(zip(phys, size))


@pytest.mark.parametrize("stage", STAGES)
def test_scratch_equals_debugfs(lab: LabRun, stage: str) -> None:
    areas = lab.guest(stage, "kho-scratch")["areas"]
    assert [(a["addr"], a["size"]) for a in areas] == _debugfs_scratch(lab, stage)
    assert [a["role"] for a in areas][:2] == ["lowmem", "global"]


def test_scratch_survives_kexec(lab: LabRun) -> None:
    first = _debugfs_scratch(lab, "n0")
    for stage in STAGES[1:]:
        areas = lab.guest(stage, "kho-scratch")["areas"]
        assert [(a["addr"], a["size"]) for a in areas] == first, stage


def test_scratch_classes(lab: LabRun) -> None:
    for stage in STAGES:
        report = lab.guest(stage, "kho-scratch")
        original = _ranges(report["classes"]["original"], "base")
        assert original == RangeSet(Range(a, s) for a, s in _debugfs_scratch(lab, stage))
        scratch_memory = RangeSet(Range(r["base"], r["size"])
                                  for r in lab.guest(stage, "memblock")["memory"]
                                  if "KHO_SCRATCH" in r["flags"])
        extended = _ranges(report["classes"]["extended"], "base")
        assert extended == scratch_memory.subtract(original), stage
        assert report["classes"]["unpreserved"] == []


def _test_kho_folios(lab: LabRun, stage: str) -> List[Range]:
    """The folios test_kho recorded in its own kho_test blob (decoded by kho fdt)."""
    fdt = lab.guest(stage, "kho-fdt")
    found = [blob for blob in _walk_dicts(fdt) if isinstance(blob.get("folios"), list)]
    assert found, f"{stage}: kho fdt decoded no kho-test folio list"
    return [Range(f["phys"], PAGE << f["order"]) for f in found[0]["folios"]]


def _walk_dicts(obj: Any) -> Iterable[Dict[str, Any]]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk_dicts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_dicts(v)


def _memfd_pages(lab: LabRun, stage: str) -> RangeSet:
    runs = lab.stage_json(stage)["memfd_out"]["pfn_runs"]
    return RangeSet(Range(pfn * PAGE, n * PAGE) for pfn, n in runs)


def test_outgoing_tree_holds_test_kho_folios(lab: LabRun) -> None:
    preserved = _ranges(lab.guest("n0", "kho-preserved")["ranges"])
    folios = _test_kho_folios(lab, "n0")
    assert len(folios) > 1
    missing = [f for f in folios if not preserved.covers(f)]
    assert not missing


def _assert_tree_holds_memfd(run: LabRun, stage: str) -> RangeSet:
    """The stage's outgoing tree (``kho preserved``) covers every page of the memfd it
    preserved, which has the size the guest asked for; returns the tree's ranges."""
    preserved = _ranges(run.guest(stage, "kho-preserved")["ranges"])
    memfd = _memfd_pages(run, stage)
    assert memfd.total == run.stage_json(stage)["memfd_out"]["size"]
    assert preserved.covers(memfd), memfd.subtract(preserved)
    return preserved


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_outgoing_tree_holds_memfd_folios(lab: LabRun, stage: str) -> None:
    _assert_tree_holds_memfd(lab, stage)


def test_preserved_ranges_are_order_aligned(lab: LabRun) -> None:
    report = lab.guest("n0", "kho-preserved")
    for r in report["ranges"]:
        block = PAGE << r["order"]
        assert r["phys"] % block == 0 and r["size"] % block == 0, r
    assert report["source"] == "out" and report["tree_pages"]


@pytest.mark.parametrize("stage", STAGES[1:])
def test_from_reserved_equals_previous_snapshot(lab: LabRun, stage: str) -> None:
    """kho_preserved_memory_reserve() reserves (noinit) exactly what N preserved."""
    previous = f"n{int(stage[1:]) - 1}"
    snapshot = _ranges(lab.guest(previous, "kho-preserved")["ranges"])
    reserved = _ranges(lab.guest(stage, "kho-preserved-from-reserved")["ranges"])
    assert reserved == snapshot, (reserved.subtract(snapshot), snapshot.subtract(reserved))


@pytest.mark.parametrize("stage", STAGES[1:])
def test_from_pages_agrees_with_snapshot(lab: LabRun, stage: str) -> None:
    """Head pages still carrying the KHO magic: preserved by N and not restored yet."""
    previous = f"n{int(stage[1:]) - 1}"
    snapshot = _ranges(lab.guest(previous, "kho-preserved")["ranges"])
    pages = _ranges(lab.guest(stage, "kho-preserved-from-pages")["ranges"])
    assert snapshot.covers(pages), pages.subtract(snapshot)
    # restored before the commands ran: the memfd (LUO retrieve), test_kho's folios
    restored = _memfd_pages(lab, previous)
    if previous == "n0":
        restored = restored.union(RangeSet(_test_kho_folios(lab, "n0")))
    assert not pages.overlaps(restored), pages.intersect(restored)
    # never restored: the reserve_mem region memblock preserved and revived
    mine = lab.stage_json(stage)["reserve_mem"]
    assert pages.covers(Range(mine["start"], mine["size"]))


def test_kho_status(lab: LabRun) -> None:
    for index, stage in enumerate(STAGES):
        status = lab.guest(stage, "kho-status")
        release = lab.stage_json(stage)["release"]
        assert status["enabled"] is True and status["kho_boot"] is (index > 0), stage
        assert status["release"] == release and status["luo"] is True
        assert status["compatible"] == "kho-v4"
        assert status["memblock_flags"]["RSRV_HUGETLB"] == 0x80
        if index:
            assert status["kexec_count"] == index, stage
            assert status["previous_release"] == release
            assert status["compatible_in"] == "kho-v4"
        else:
            assert status["kexec_count"] in (None, 0)

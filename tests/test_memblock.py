# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho-inspect memblock on synthetic kernels of every generation.

Expectations come from what the bench (tests/synth/memblock.py) wrote and
from flag names spelled out here, never from the tool's own output.
"""

import json
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from drgn import Object
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synth.kernel import DIRECT_MAP, SynthKernel
from synth.memblock import (
    GENERATIONS,
    MAX_NUMNODES,
    NUMA_NO_NODE,
    RawRegion,
    add_memblock,
    memblock_kernel,
)

from kho_inspect.cli import Session, run
from kho_inspect.cli.errors import cli_message
from kho_inspect.errors import EXIT_CANNOT_INSPECT, EXIT_OK, StaleMemblockError
from kho_inspect.memblock import read_memblock
from kho_inspect.preserved import read_reserved
from kho_inspect.records import RecordLayout

GB = 1 << 30
MB = 1 << 20
PREFIX = "kho-inspect: error: "

# Per generation: (flags value, the names kho-inspect must print), spelled out
# from docs/kernel/memblock.md#flags and docs/kernel/series.md#detecting-the-generation.
CASES: Dict[str, List[Tuple[int, List[str]]]] = {
    "7.3": [(0x0, []), (0x40, ["KHO_SCRATCH"]), (0xA0, ["RSRV_KERN", "RSRV_HUGETLB"]),
            (0x30, ["RSRV_NOINIT", "RSRV_KERN"]), (0x100, ["0x100"]),
            (0x10D, ["HOTPLUG", "NOMAP", "DRIVER_MANAGED", "0x100"])],
    "series-v1": [(0x80, ["KHO_SCRATCH_EXT"]), (0xC0, ["KHO_SCRATCH", "KHO_SCRATCH_EXT"]),
                  (0xA0, ["RSRV_KERN", "KHO_SCRATCH_EXT"]), (0x100, ["0x100"])],
    "unpreserved": [(0x100, ["KHO_UNPRESERVED"]), (0x80, ["RSRV_HUGETLB"]),
                    (0x140, ["KHO_SCRATCH", "KHO_UNPRESERVED"]), (0x200, ["0x200"])],
    "no-numa": [(0x41, ["HOTPLUG", "KHO_SCRATCH"]), (0x2, ["MIRROR"]), (0x400, ["0x400"])],
    "s390": [(0x4, ["NOMAP"]), (0x80, ["RSRV_HUGETLB"]), (0x100, ["0x100"])],
}
# The enumerators each generation's debug info must report, by value.
ENUMS = {
    "7.3": ["NONE", "HOTPLUG", "MIRROR", "NOMAP", "DRIVER_MANAGED", "RSRV_NOINIT", "RSRV_KERN",
            "KHO_SCRATCH", "RSRV_HUGETLB"],
    "series-v1": ["NONE", "HOTPLUG", "MIRROR", "NOMAP", "DRIVER_MANAGED", "RSRV_NOINIT",
                  "RSRV_KERN", "KHO_SCRATCH", "KHO_SCRATCH_EXT"],
    "unpreserved": ["NONE", "HOTPLUG", "MIRROR", "NOMAP", "DRIVER_MANAGED", "RSRV_NOINIT",
                    "RSRV_KERN", "KHO_SCRATCH", "RSRV_HUGETLB", "KHO_UNPRESERVED"],
}
ENUMS["no-numa"] = ENUMS["s390"] = ENUMS["7.3"]
NIDS = [0, 1, MAX_NUMNODES, NUMA_NO_NODE]


def layout_regions(cases: Sequence[Tuple[int, List[str]]]) -> Tuple[List[RawRegion],
                                                                      List[RawRegion]]:
    """One memory region per case, 1 GiB apart, and one reserved region inside each."""
    memory = [RawRegion(GB * (i + 1), 512 * MB, value, NIDS[i % 4])
              for i, (value, _) in enumerate(cases)]
    reserved = [RawRegion(r.base + 4 * MB, 2 * MB, value, NIDS[(i + 1) % 4])
                for i, (r, (value, _)) in enumerate(zip(memory, cases))]
    return memory, reserved


def expected(written: Sequence[RawRegion], names: Dict[int, List[str]],
             numa: bool = True) -> List[dict]:
    # MAX_NUMNODES and NUMA_NO_NODE mean "no node" (docs/kernel/memblock.md#struct-layouts);
    # without CONFIG_NUMA every region is on node 0 (memblock_get_region_node()).
    def nid(value: int) -> Optional[int]:
        if not numa:
            return 0
        return value if value not in (MAX_NUMNODES, NUMA_NO_NODE) else None

    return [{"base": r.base, "size": r.size, "nid": nid(r.nid), "flags": names[r.flags]}
            for r in written]


def as_json(capsys, prog, *argv: str) -> dict:
    assert run(["memblock", *argv, "--json"], Session(program_=prog)) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def error(capsys, prog, *argv: str) -> str:
    assert run(["memblock", *argv], Session(program_=prog)) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert err.startswith(PREFIX) and err.count("\n") == 1, err
    message = err[len(PREFIX):].strip()
    assert message.endswith(".")
    return message


# --- every generation, read through the CLI ----------------------------------


@pytest.mark.parametrize("generation", sorted(CASES))
def test_every_generation_is_read_as_written(capsys, generation):
    gen = GENERATIONS[generation]
    memory, reserved = layout_regions(CASES[generation])
    prog, layout = memblock_kernel(generation, memory=memory, reserved=reserved,
                                   reserve_mem=[("kho_test", 5 * GB, 16 * MB)],
                                   bottom_up=True, current_limit=4 * GB)
    doc = as_json(capsys, prog)
    names = dict(CASES[generation])
    assert doc["memory"] == expected(layout.regions["memory"], names, gen.numa)
    assert doc["reserved"] == expected(layout.regions["reserved"], names, gen.numa)
    assert list(doc["flags"]) == ENUMS[generation]
    assert doc["stale"] is False and doc["stale_reason"] is None
    for name in ("memory", "reserved"):
        assert doc["types"][name] == {"cnt": len(layout.regions[name]), "max": layout.max[name],
                                      "total_size": sum(r.size for r in layout.regions[name])}
    assert (doc["bottom_up"], doc["current_limit"]) == (True, 4 * GB)
    assert doc["reserve_mem"] == [{"name": "kho_test", "start": 5 * GB, "size": 16 * MB}]
    assert ("physmem" in doc) == gen.phys_map


def test_physmem_on_s390(capsys):
    memory = [RawRegion(0, GB, 0x40, 0), RawRegion(GB, GB, 0, 0)]
    prog, layout = memblock_kernel("s390", memory=memory)
    doc = as_json(capsys, prog, "--type", "physmem")
    assert list(doc["types"]) == ["physmem"] and "memory" not in doc
    # memblock_physmem_add() records no flags and MAX_NUMNODES.
    assert doc["physmem"] == [{"base": 0, "size": GB, "nid": None, "flags": []},
                              {"base": GB, "size": GB, "nid": None, "flags": []}]
    assert doc["types"]["physmem"]["max"] == 4 == layout.max["physmem"]


def test_physmem_on_a_kernel_without_it_is_refused(capsys):
    prog, _ = memblock_kernel("7.3", memory=[RawRegion(0, GB)])
    assert error(capsys, prog, "--type", "physmem") == (
        "This kernel has no physmem (it needs CONFIG_HAVE_MEMBLOCK_PHYS_MAP, which only s390 "
        "selects): use --type memory, reserved or all.")


def test_grown_array_is_read_in_one_read(capsys):
    kernel = SynthKernel(ram_size=1 << 32)
    reserved = [RawRegion(GB + i * 4 * MB, MB, 0x20, 0) for i in range(300)]
    layout = add_memblock(kernel, "7.3", memory=[RawRegion(GB, 2 * GB)], reserved=reserved)
    assert layout.grown("reserved") and layout.max["reserved"] == 512
    kernel.reads.clear()
    state = read_memblock(kernel.prog)
    assert [(r.base, r.size) for r in state.reserved.regions] == [(r.base, r.size)
                                                                  for r in reserved]
    array = layout.arrays["reserved"] - DIRECT_MAP
    touching = [(off, n) for off, n in kernel.reads if off < array + 300 * 24 and
                array < off + n]
    assert touching == [(array, 300 * 24)]


def test_reserve_mem_skips_released_entries(capsys):
    prog, _ = memblock_kernel("7.3", memory=[RawRegion(0, GB)],
                              reserve_mem=[("a", GB, MB), ("gone", 0, 0), ("b", 2 * GB, 2 * MB)])
    assert as_json(capsys, prog)["reserve_mem"] == [
        {"name": "a", "start": GB, "size": MB}, {"name": "b", "start": 2 * GB, "size": 2 * MB}]


def test_kernel_without_reserve_mem_has_an_empty_table(capsys):
    gen = GENERATIONS["7.3"].__class__("old", reserve_mem=False)
    prog, _ = memblock_kernel(gen, memory=[RawRegion(0, GB)])
    assert as_json(capsys, prog)["reserve_mem"] == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(CASES)),
       st.lists(st.tuples(st.integers(1, 64), st.integers(0, (1 << 11) - 1),
                          st.sampled_from(NIDS)), max_size=20))
def test_any_layout_round_trips(generation, specs):
    gen = GENERATIONS[generation]
    base, memory = 0, []
    for pages, value, nid in specs:  # sorted and disjoint, as memblock keeps them
        memory.append(RawRegion(base, pages << 12, value, nid))
        base += (pages + 1) << 12
    prog, layout = memblock_kernel(generation, memory=memory)
    state = read_memblock(prog)
    enum = {v: n[len("MEMBLOCK_"):] for n, v in gen.flags if v}
    assert len(state.memory.regions) == len(memory)
    for r, got in zip(layout.regions["memory"], state.memory.regions):
        bits = [1 << i for i in range(11) if r.flags >> i & 1]
        assert got.flags == tuple(enum.get(b, hex(b)) for b in bits)
        assert (got.base, got.size) == (r.base, r.size)
        valid = gen.numa and 0 <= r.nid < MAX_NUMNODES
        assert got.nid == (r.nid if valid else None if gen.numa else 0)


# --- text and Markdown --------------------------------------------------------


@pytest.fixture(scope="module")
def kernel73():
    memory, reserved = layout_regions(CASES["7.3"])
    return memblock_kernel("7.3", memory=memory, reserved=reserved,
                           reserve_mem=[("kho_test", 5 * GB, 16 * MB)])


def test_text_output(capsys, kernel73):
    prog, layout = kernel73
    assert run(["memblock"], Session(program_=prog)) == EXIT_OK
    out = capsys.readouterr().out
    assert "memblock.memory: 6 regions (max 128), total_size 3 GiB (0xc0000000)" in out
    rows = [line.split() for line in out.splitlines() if line.strip()]
    # index, base, inclusive end, human and exact size, nid ("-": MAX_NUMNODES), flags
    assert ["2", "0x00000000c0000000", "0x00000000dfffffff", "512", "MiB", "0x20000000", "-",
            "RSRV_KERN|RSRV_HUGETLB"] in rows
    assert ["0", "0x0000000040000000", "0x000000005fffffff", "512", "MiB", "0x20000000", "0",
            "NONE"] in rows
    assert any(row[-1] == "HOTPLUG|NOMAP|DRIVER_MANAGED|0x100" for row in rows)
    assert ["memory", "KHO_SCRATCH", "1", "512", "MiB", "0x20000000"] in rows
    assert ["reserved", "all", "6", "12", "MiB", "0xc00000"] in rows
    assert "kho_test  0x0000000140000000  0x0000000140ffffff  16 MiB" in out
    assert "state                 maintained" in out
    assert "top-down (memblock.bottom_up)" in out and "MEMBLOCK_ALLOC_ANYWHERE" in out
    assert "RSRV_HUGETLB    0x80" in out  # the enum table


def test_markdown_output(capsys, kernel73):
    prog, _ = kernel73
    assert run(["memblock", "--format", "markdown"], Session(program_=prog)) == EXIT_OK
    out = capsys.readouterr().out
    assert "### memblock.reserved: 6 regions (max 128)" in out
    assert "| 0   | 0x0000000040400000 | 0x00000000405fffff | 2 MiB  | 0x200000 | 1     | NONE" \
        in out
    assert "### Totals" in out and "### reserve_mem= regions (reserved_mem_table)" in out


def test_flag_filter_keeps_kernel_indexes(capsys, kernel73):
    prog, layout = kernel73
    assert run(["memblock", "--type", "reserved", "--flag", "RSRV_KERN"],
               Session(program_=prog)) == EXIT_OK
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("2 ", "3 "))]
    assert [r[0] for r in rows] == ["2", "3"] and "memblock.memory" not in out
    assert "Only regions with RSRV_KERN are shown." in out


# --- --flag and --type ----------------------------------------------------------


@pytest.mark.parametrize("given_name, value", [
    ("KHO_SCRATCH", 0x40), ("memblock_kho_scratch", 0x40), ("0x40", 0x40), ("0x100", 0x100),
    ("RSRV_HUGETLB", 0x80), ("NONE", 0x0),
])
def test_flag_filter_json(capsys, kernel73, given_name, value):
    prog, layout = kernel73
    doc = as_json(capsys, prog, "--flag", given_name)
    bit = value or None
    for name in ("memory", "reserved"):
        keep = [r for r in layout.regions[name]
                if (r.flags & bit if bit else r.flags == 0)]
        assert [(r["base"], r["size"]) for r in doc[name]] == [(r.base, r.size) for r in keep]
        assert doc["totals"][name]["all"] == sum(r.size for r in keep)
        assert doc["types"][name]["cnt"] == len(layout.regions[name])  # the kernel's header


def test_flag_of_another_kernel_is_refused_with_this_kernels_flags(capsys, kernel73):
    prog, _ = kernel73
    assert error(capsys, prog, "--flag", "KHO_SCRATCH_EXT") == (
        "This kernel's enum memblock_flags has no flag 'KHO_SCRATCH_EXT': its flags are NONE, "
        "HOTPLUG, MIRROR, NOMAP, DRIVER_MANAGED, RSRV_NOINIT, RSRV_KERN, KHO_SCRATCH, "
        "RSRV_HUGETLB (give a bit it does not name in hex, such as 0x100).")
    v1, _ = memblock_kernel("series-v1", memory=[RawRegion(0, GB, 0x80, 0)])
    assert "KHO_SCRATCH_EXT" in error(capsys, v1, "--flag", "RSRV_HUGETLB")
    assert as_json(capsys, v1, "--flag", "KHO_SCRATCH_EXT")["memory"][0]["flags"] == [
        "KHO_SCRATCH_EXT"]


def test_type_selects_one_array(capsys, kernel73):
    prog, _ = kernel73
    doc = as_json(capsys, prog, "--type", "reserved")
    assert "reserved" in doc and "memory" not in doc and list(doc["totals"]) == ["reserved"]


# --- stale memblock -----------------------------------------------------------

ADVICE = ("inspect a kernel that keeps memblock (CONFIG_ARCH_KEEP_MEMBLOCK, which x86 gets with "
          "CONFIG_INTEL_TDX_HOST) or a vmcore taken during boot, or pass --allow-stale to see "
          "the arrays as they were left.")
MEMORY = [RawRegion(GB, GB, 0, 0), RawRegion(2 * GB, GB, 0x40, 1)]
RESERVED = [RawRegion(GB + i * 8 * MB, MB, 0x20, 0) for i in range(6)]


def test_discarded_memblock_is_refused(capsys):
    prog, _ = memblock_kernel("discarded", memory=MEMORY, reserved=RESERVED)
    assert error(capsys, prog) == (
        "memblock cannot be trusted (memblock_discard() set memblock_memory to NULL after boot, "
        "as kernels without CONFIG_ARCH_KEEP_MEMBLOCK do; memblock.memory and "
        "memblock.reserved still use their static arrays, frozen as boot left them): " + ADVICE)


def test_allow_stale_marks_frozen_arrays(capsys):
    prog, layout = memblock_kernel("discarded", memory=MEMORY, reserved=RESERVED)
    doc = as_json(capsys, prog, "--allow-stale")
    assert doc["stale"] is True and "frozen as boot left them" in doc["stale_reason"]
    names = {0: [], 0x20: ["RSRV_KERN"], 0x40: ["KHO_SCRATCH"]}
    assert doc["reserved"] == expected(layout.regions["reserved"], names)
    assert run(["memblock", "--allow-stale"], Session(program_=prog)) == EXIT_OK
    out = capsys.readouterr().out
    assert "STALE" in out and "they are shown because of --allow-stale" in out


def test_discarded_grown_array_dangles(capsys):
    prog, layout = memblock_kernel("discarded", memory=MEMORY, reserved=RESERVED,
                                   init_regions=4)
    assert layout.grown("reserved") and not layout.grown("memory")
    message = error(capsys, prog)
    assert (f"memblock.reserved.regions points at {layout.arrays['reserved']:#x}, a grown "
            "array that memblock_discard() freed") in message
    assert "memblock.memory still use its static array" in message
    doc = as_json(capsys, prog, "--allow-stale")
    assert doc["stale"] is True
    assert [(r["base"], r["size"]) for r in doc["reserved"]] != [(r.base, r.size)
                                                                 for r in RESERVED]


def test_not_yet_discarded_kernel_is_trusted(capsys):
    # A kernel without ARCH_KEEP_MEMBLOCK before page_alloc_init_late().
    prog, _ = memblock_kernel("discarded", memory=MEMORY, reserved=RESERVED, discarded=False)
    assert as_json(capsys, prog)["stale"] is False


def test_memblock_in_freed_init_memory(capsys):
    prog, _ = memblock_kernel("discarded-init", memory=MEMORY, reserved=RESERVED)
    assert error(capsys, prog) == (
        "memblock cannot be trusted (struct memblock is in the init section that "
        "free_initmem() released after boot, as on kernels without CONFIG_ARCH_KEEP_MEMBLOCK "
        "and CONFIG_MEMORY_HOTPLUG): " + ADVICE)
    doc = as_json(capsys, prog, "--allow-stale")
    assert doc["stale"] is True and doc["memory"] == [] and doc["reserved"] == []


def test_memblock_in_unmapped_init_memory_cannot_be_read_at_all(capsys):
    prog, layout = memblock_kernel("discarded-init", memory=MEMORY, free_init="unmap")
    message = error(capsys, prog, "--allow-stale")
    assert message.startswith(f"memblock cannot be read: struct memblock at "
                              f"{layout.memblock:#x} is in the init section that this kernel "
                              "freed and unmapped after boot")


def test_kernel_without_memblock_memory_is_judged_by_memblock_discard(capsys):
    prog, _ = memblock_kernel("discarded-old", memory=MEMORY, reserved=RESERVED)
    assert "this kernel has a real memblock_discard(), so it lacks CONFIG_ARCH_KEEP_MEMBLOCK" \
        in error(capsys, prog)


CORRUPT = "check that the debug info (--vmlinux) belongs to this kernel, or pass --allow-stale"


def test_total_size_drift_is_a_note_not_a_refusal(capsys):
    # memblock_trim_memory() leaves total_size above the sum (seen in the lab: 0xc00).
    prog, _ = memblock_kernel("7.3", memory=MEMORY, reserved=RESERVED,
                              overrides={"memory.total_size": (2 << 30) + 0xC00})
    doc = as_json(capsys, prog)
    assert doc["stale"] is False
    assert doc["extra"]["notes"] == [
        "memblock.memory.total_size 0x80000c00 differs from the sum of its regions 0x80000000 "
        "by 0xc00 (memblock_trim_memory() rounds regions without updating it)"]


@pytest.mark.parametrize("overrides, regions, reason", [
    ({"reserved.cnt": 300}, RESERVED, "memblock.reserved.cnt 300 exceeds its max 128"),
    ({"memory.regions": 0}, RESERVED, "memblock.memory.regions is NULL"),
    ({"memory.cnt": 1 << 40, "memory.max": 1 << 40}, RESERVED,
     f"memblock.memory claims {1 << 40} of {1 << 40} regions, more than any kernel has"),
    ({}, list(reversed(RESERVED)), "memblock.reserved regions overlap or are out of order"),
    ({"reserved.regions": 0xFFFF_FFFF_9000_0000}, RESERVED,
     "memblock.reserved.regions at 0xffffffff90000000 cannot be read"),
])
def test_corrupt_arrays_are_refused(capsys, overrides, regions, reason):
    prog, _ = memblock_kernel("7.3", memory=MEMORY, reserved=regions, overrides=overrides)
    message = error(capsys, prog)
    assert message == f"memblock cannot be trusted ({reason}): {CORRUPT} to see the arrays anyway."
    doc = as_json(capsys, prog, "--allow-stale")
    assert doc["stale"] is True and doc["stale_reason"] == reason


def test_unreadable_struct_memblock(capsys):
    kernel = SynthKernel()
    add_memblock(kernel, "7.3", memory=MEMORY)
    t, _ = kernel.variables["memblock"]
    kernel.variables["memblock"] = (t, 0xFFFF_FFFF_9000_0000)
    assert error(capsys, kernel.prog).startswith(
        "struct memblock at 0xffffffff90000000 cannot be read (")


def test_kernel_without_memblock_debug_info(capsys):
    assert error(capsys, SynthKernel().prog) == (
        "The debug info has no variable memblock (struct memblock): pass a vmlinux with "
        "complete DWARF for this kernel with --vmlinux.")


def test_preserved_from_reserved_refuses_stale_memblock_in_its_own_words():
    prog, _ = memblock_kernel("discarded", memory=MEMORY, reserved=RESERVED)
    with pytest.raises(StaleMemblockError, match=r"^memblock.reserved cannot be trusted \("
                                                 r".*\): use source='pages' or "
                                                 r"source='snapshot'\.$") as info:
        read_reserved(prog)
    assert (info.value.given, info.value.name, info.value.alternatives) == (
        "source", "reserved", ("pages", "snapshot"))
    assert cli_message(info.value).endswith(": use --from pages or --from snapshot FILE.")


# --- records ------------------------------------------------------------------


def test_record_layout_follows_the_type_and_byte_order():
    for generation, order in (("7.3", "little"), ("s390", "big")):
        prog, _ = memblock_kernel(generation, memory=[RawRegion(0x1000, 0x2000, 0x41, 3)])
        layout = RecordLayout(prog.type("struct memblock_region"), ("nid", "flags", "base"),
                              order)
        raw = prog.read(prog["memblock_memory_init_regions"].address_, 24)
        assert list(layout.unpack(raw, 1)) == [(3, 0x41, 0x1000)], generation
    with pytest.raises(TypeError, match="cannot decode"):
        RecordLayout(prog.type("struct memblock"), ("memory",), "big")


def test_memblock_memory_optimized_out_on_a_kernel_that_keeps_memblock(capsys):
    # With ARCH_KEEP_MEMBLOCK nothing writes memblock_memory, so the compiler
    # may leave it without a location: an absent object, not a discard.
    kernel = SynthKernel()
    add_memblock(kernel, "7.3", memory=MEMORY, reserved=RESERVED)
    pointer_type, _ = kernel.variables.pop("memblock_memory")

    def absent(prog, name, flags, filename):
        return Object(prog, pointer_type) if name == "memblock_memory" else None

    kernel.prog.register_object_finder("absent", absent, enable_index=0)
    assert as_json(capsys, kernel.prog)["stale"] is False

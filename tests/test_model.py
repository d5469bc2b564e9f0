# SPDX-License-Identifier: LGPL-2.1-or-later
"""The model: flag decoding by name, selection and totals, and lossless JSON."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kho_inspect.cli.errors import cli_message
from kho_inspect.errors import NotInKernelError
from kho_inspect.model import FlagTable, MemblockState, MemblockType, Region, ReserveMem
from kho_inspect.model.memblock import flag_name, type_names

BITS = [1 << i for i in range(12)]

# A table names some single bits; NONE is 0 and a multi-bit enumerator is
# ignored by decode, as in enums that carry masks.
flag_tables = st.sets(st.sampled_from(BITS)).map(
    lambda named: FlagTable({"NONE": 0, "MASK": 0x3, **{f"F{b:x}": b for b in named}}))
values = st.integers(min_value=0, max_value=(1 << 12) - 1)


@given(flag_tables, values)
def test_decode_names_every_set_bit_lowest_first(table, value):
    names = table.decode(value)
    bits = [b for b in BITS if value & b]
    assert len(names) == len(bits)
    for bit, name in zip(bits, names):
        assert name == (f"F{bit:x}" if table.has(f"F{bit:x}") else hex(bit))
    assert table.encode(names) == value


def test_from_enumerators_strips_the_prefix_only_where_present():
    table = FlagTable.from_enumerators(
        [("MEMBLOCK_NONE", 0), ("MEMBLOCK_KHO_SCRATCH", 0x40), ("OTHER", 0x80)], "MEMBLOCK_")
    assert table.values == {"NONE": 0, "KHO_SCRATCH": 0x40, "OTHER": 0x80}
    assert table.decode(0x1C0) == ("KHO_SCRATCH", "OTHER", "0x100")
    assert table.decode(0) == ()


def test_the_same_bit_has_different_names_in_different_kernels():
    v73 = FlagTable({"RSRV_HUGETLB": 0x80})
    v1 = FlagTable({"KHO_SCRATCH_EXT": 0x80})
    assert v73.decode(0x80) == ("RSRV_HUGETLB",) and v1.decode(0x80) == ("KHO_SCRATCH_EXT",)


@given(flag_tables)
def test_flag_table_json_round_trip(table):
    obj = json.loads(json.dumps(table.to_json()))
    assert FlagTable.from_json(obj) == table
    assert list(obj.values()) == sorted(obj.values())  # listed by value


# --- memblock state ----------------------------------------------------------

names = st.sampled_from(["HOTPLUG", "KHO_SCRATCH", "RSRV_NOINIT", "RSRV_KERN", "0x100"])
regions = st.builds(
    Region,
    st.integers(0, 1 << 52),
    st.integers(0, 1 << 40),
    st.lists(names, unique=True, max_size=3).map(tuple),
    st.one_of(st.none(), st.integers(0, 1023)),
)
region_lists = st.lists(regions, max_size=6).map(tuple)


def mtype(name, regs, extra=0):
    return MemblockType(name, regs, len(regs) + extra, 128 + extra,
                        sum(r.size for r in regs) + extra)


states = st.builds(
    lambda mem, res, phys, stale, rmem, bottom_up, limit, extra: MemblockState(
        types={"memory": mtype("memory", mem, extra), "reserved": mtype("reserved", res),
               **({"physmem": mtype("physmem", phys)} if phys is not None else {})},
        flags=FlagTable({"NONE": 0, "HOTPLUG": 1, "KHO_SCRATCH": 0x40}),
        stale=stale is not None, stale_reason=stale,
        reserve_mem=rmem, bottom_up=bottom_up, current_limit=limit),
    region_lists, region_lists, st.one_of(st.none(), region_lists),
    st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    st.lists(st.builds(ReserveMem, st.text(max_size=15), st.integers(0, 1 << 40),
                       st.integers(1, 1 << 30)), max_size=3).map(tuple),
    st.one_of(st.none(), st.booleans()), st.one_of(st.none(), st.integers(0, (1 << 64) - 1)),
    st.integers(0, 3),
)


@given(states)
def test_memblock_state_json_round_trip(state):
    obj = json.loads(json.dumps(state.to_json()))
    assert MemblockState.from_json(obj) == state
    assert list(obj)[:2] == ["memory", "reserved"] and ("physmem" in obj) == (
        "physmem" in state.types)


@given(states, st.sampled_from(["HOTPLUG", "KHO_SCRATCH", "NONE", "0x100"]))
def test_select_keeps_exactly_the_regions_with_the_flag(state, flag):
    picked = state.select(["reserved"], flag)
    assert list(picked.types) == ["reserved"]
    before, after = state.types["reserved"], picked.types["reserved"]
    expected = [r for r in before.regions
                if (flag in r.flags if flag != "NONE" else not r.flags)]
    assert list(after.regions) == expected
    assert (after.cnt, after.max, after.total_size) == (before.cnt, before.max,
                                                        before.total_size)
    assert picked.flags == state.flags and picked.reserve_mem == state.reserve_mem
    assert state.select() == state


def test_select_unknown_type_is_a_key_error():
    state = MemblockState({"memory": mtype("memory", ())}, FlagTable({}))
    with pytest.raises(KeyError):
        state.select(["physmem"])


@given(region_lists)
def test_totals_count_each_flag(regs):
    t = mtype("memory", regs)
    totals = t.totals()
    assert totals["all"] == (len(regs), sum(r.size for r in regs))
    for name in {f for r in regs for f in r.flags} | {"NONE"}:
        with_flag = [r for r in regs if r.has_flag(name)]
        assert totals.get(name, (0, 0)) == (len(with_flag), sum(r.size for r in with_flag))
    state = MemblockState({"memory": t}, FlagTable({}))
    assert state.totals() == {"memory": {k: size for k, (_, size) in totals.items()}}


def test_region_map_finds_the_region_of_an_address():
    a, b = Region(0x1000, 0x1000, ("KHO_SCRATCH",), 0), Region(0x3000, 0x1000, (), 1)
    m = mtype("memory", (a, b)).region_map()
    assert m.get(0x1FFF) == a and m.get(0x2000) is None and m[0x3000] == b
    with pytest.raises(ValueError):
        mtype("memory", (a, Region(0x1800, 0x1000))).region_map()


def test_flag_name_resolves_spellings_and_refuses_with_the_kernels_flags():
    table = FlagTable({"NONE": 0, "HOTPLUG": 1, "KHO_SCRATCH": 0x40})
    assert flag_name(table, "memblock_kho_scratch") == "KHO_SCRATCH"
    assert flag_name(table, "0x40") == "KHO_SCRATCH" and flag_name(table, "0x100") == "0x100"
    with pytest.raises(NotInKernelError) as info:
        flag_name(table, "RSRV_HUGETLB")
    err = info.value
    assert (err.given, err.name, err.available) == ("flag", "RSRV_HUGETLB",
                                                   ("NONE", "HOTPLUG", "KHO_SCRATCH"))
    assert "its flags are NONE, HOTPLUG, KHO_SCRATCH" in str(err)


def test_type_names_refuses_a_type_the_kernel_lacks_in_api_and_cli_words():
    state = MemblockState({"memory": mtype("memory", ()), "reserved": mtype("reserved", ())},
                          FlagTable({}))
    assert type_names(state, "all") == ["memory", "reserved"]
    with pytest.raises(NotInKernelError) as info:
        type_names(state, "physmem")
    assert str(info.value).endswith(": use the types argument memory, reserved or all.")
    assert cli_message(info.value).endswith(": use --type memory, reserved or all.")


def test_memblock_type_json_round_trip():
    t = mtype("reserved", (Region(0x1000, 0x2000, ("RSRV_KERN",), 0),), extra=2)
    assert MemblockType.from_json(json.loads(json.dumps(t.to_json()))) == t

# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every model type reads back from its JSON: ``T.from_json(json(x.to_json())) == x``.

Each type has a strategy of *valid* instances: built the way the walkers
build them (a scratch report through ``build_report``, a root FDT and its
blobs from bytes through the decoders), since a report's JSON does not
repeat what is derived. Types without an entry in ``STRATEGIES`` are
generated from their annotations (every field, defaults included), and the
property test of such a type fails when that cannot build a valid one: add
an entry to ``STRATEGIES`` then.
"""

import dataclasses
import importlib
import json
import pkgutil
from typing import Any, Dict, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synth.kho import (
    folio_list_pages,
    kexec_metadata_blob,
    kho_root_fdt,
    kho_test_blob,
    kho_vmalloc_desc,
    luo_blob,
    memblock_blob,
    page_reader,
)

import kho_inspect.model
from kho_inspect.fdt import decode_blob, decode_kho_root
from kho_inspect.model.check import STATUSES, CheckReport, Evidence, RuleInfo, RuleResult
from kho_inspect.model.diagnosis import ACTIVATION_STATES, KhoActivation
from kho_inspect.model.hugetlb import ORIGINS, CmaArea, HugePage, HugetlbReport
from kho_inspect.model.kho import BlobReport, KhoFdtReport, KhoStatus
from kho_inspect.model.memblock import FlagTable, MemblockState, MemblockType, Region, ReserveMem
from kho_inspect.model.pageblock import PageblockLayout, PageblockRun
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.scratch import (
    CLASSES,
    CmaCounters,
    CmaUsage,
    NodeUse,
    ScratchArea,
    ScratchClasses,
    ScratchReport,
    build_report,
    classify,
)
from kho_inspect.model.snapshot import CmaRegion, Snapshot, fdt_summary
from kho_inspect.ranges import Range, RangeSet

GB = 1 << 30

# --- building blocks -----------------------------------------------------------

u64 = st.integers(0, (1 << 64) - 1)
addr = st.integers(0, 1 << 46)
size = st.integers(0, 1 << 34)
small = st.integers(0, 1 << 20)
text = st.text(max_size=12)
maybe_text = st.none() | text
nid = st.none() | st.integers(0, 63)
notes = st.lists(text, max_size=3).map(tuple)
ranges = st.builds(Range, addr, size)
range_sets = st.lists(ranges, max_size=5).map(RangeSet)
node_map = st.dictionaries(nid, small, max_size=3)

# Flag tables of the generations that matter (docs/kernel/memblock.md#flags).
TABLES = [
    FlagTable({"NONE": 0, "HOTPLUG": 1, "KHO_SCRATCH": 0x40, "RSRV_HUGETLB": 0x80}),  # 7.3
    FlagTable({"NONE": 0, "KHO_SCRATCH": 0x40, "KHO_SCRATCH_EXT": 0x80}),  # series v1
    FlagTable({"NONE": 0, "KHO_SCRATCH": 0x40, "KHO_UNPRESERVED": 0x100}),
    FlagTable({}),  # no enum memblock_flags in the debug info
]
flag_tables = st.sampled_from(TABLES) | st.dictionaries(
    st.text("ABCDEFGHIJ_", min_size=1, max_size=8), st.integers(0, 1 << 12),
    max_size=5).map(FlagTable)

st.register_type_strategy(Range, ranges)
st.register_type_strategy(RangeSet, range_sets)
st.register_type_strategy(FlagTable, flag_tables)

# --- memblock --------------------------------------------------------------------


def regions_of(table: FlagTable) -> st.SearchStrategy:
    names = sorted(table.values) + ["0x1000"]
    return st.builds(Region, addr, size, st.lists(st.sampled_from(names), unique=True,
                                                  max_size=3).map(tuple), nid)


regions = regions_of(TABLES[0])
region_tuples = st.lists(regions, max_size=5).map(tuple)
reserve_mems = st.builds(ReserveMem, text, addr, size)
memblock_types = st.builds(MemblockType, st.sampled_from(["memory", "reserved", "physmem"]),
                           region_tuples, small, small, size)


@st.composite
def memblock_states(draw, table: Optional[FlagTable] = None) -> MemblockState:
    table = table if table is not None else draw(flag_tables)
    region_list = st.lists(regions_of(table), max_size=5).map(tuple)
    names = ["memory", "reserved"] + (["physmem"] if draw(st.booleans()) else [])
    types = {n: MemblockType(n, draw(region_list), draw(small), draw(small), draw(size))
             for n in names}
    stale = draw(maybe_text)
    return MemblockState(
        types=types, flags=table, stale=stale is not None, stale_reason=stale,
        reserve_mem=draw(st.lists(reserve_mems, max_size=2).map(tuple)),
        bottom_up=draw(st.none() | st.booleans()), current_limit=draw(st.none() | u64),
        extra=draw(st.just({}) | st.just({"notes": ["total_size drifted"]})))


# --- pageblocks and scratch ----------------------------------------------------------

layouts = st.builds(
    PageblockLayout, st.integers(10, 16), st.integers(24, 30), st.integers(0, 10),
    st.sampled_from([4, 8]), st.sampled_from([0x7, 0x3]), st.sampled_from([0, 0x10]),
    st.dictionaries(st.integers(0, 7), st.text("ABCMOVL", min_size=1, max_size=8),
                    max_size=5),
    st.sampled_from(["little", "big"]), st.sampled_from([4, 8]), text)
runs = st.builds(PageblockRun, addr, size, st.sampled_from(["CMA", "MOVABLE", "NO_MEMMAP"]),
                 st.booleans())
areas = st.builds(ScratchArea, small, addr, size, text, nid, st.lists(nid, max_size=3).map(tuple))
cma_usages = st.builds(CmaUsage, st.none() | range_sets, node_map, node_map, notes)
node_uses = st.builds(NodeUse, nid, size, size, size, size, st.none() | size)


@st.composite
def scratch_reports(draw) -> ScratchReport:
    """Reports as :func:`kho_inspect.scratch.scratch_report` builds them."""
    table = draw(st.sampled_from(TABLES))
    error = draw(st.none() | st.just("memblock was discarded after boot."))
    memblock = None if error else draw(memblock_states(table))
    array = draw(st.lists(ranges, max_size=5))
    memory = memblock.memory.regions if memblock is not None else ()
    classes = classify(RangeSet(array), memory, table)
    return build_report(
        symbols=draw(st.sampled_from([("kho_scratch", "kho_scratch_cnt"),
                                      ("kho_bootmem", "kho_bootmem_cnt")])),
        array=array, nodes=draw(st.lists(st.integers(0, 7), max_size=3, unique=True).map(sorted)),
        memblock=memblock, classes=classes,
        runs=draw(st.dictionaries(st.sampled_from(CLASSES), st.lists(runs, max_size=3),
                                  max_size=3)),
        layout=draw(st.none() | layouts), usage=draw(cma_usages),
        totalram=draw(st.none() | size), notes=draw(notes),
        kho_boot=draw(st.none() | st.booleans()), memblock_error=error)


# --- preserved memory ---------------------------------------------------------------------

preserved_reports = st.builds(
    PreservedReport,
    source=st.sampled_from(["out", "reserved", "pages", "snapshot"]),
    ranges=st.lists(st.tuples(addr, size, st.none() | st.integers(0, 52)), max_size=5).map(tuple),
    tree_pages=st.lists(addr, max_size=4).map(tuple),
    histogram=st.dictionaries(st.integers(0, 52), small, max_size=4),
    keys=st.none() | st.lists(u64, max_size=4).map(tuple),
    root=st.none() | addr, kernel=maybe_text, page_shift=st.sampled_from([12, 14, 16]),
    notes=notes,
    origin=st.none() | st.fixed_dictionaries({"file": text, "source": text,
                                              "kernel": maybe_text}))

# --- KHO status and FDT -------------------------------------------------------------------

statuses = st.builds(
    KhoStatus, maybe_text, st.none() | st.booleans(), st.booleans(), st.none() | small,
    maybe_text, st.none() | small, maybe_text, maybe_text, st.none() | st.booleans(),
    st.none() | small, flag_tables, st.none() | u64, st.none() | addr, st.none() | addr,
    st.none() | addr, st.none() | addr, st.none() | small,
    st.dictionaries(st.sampled_from(["kho_out", "kho_in", "kho_enable", "luo", "scratch"]),
                    maybe_text), notes)

PAGE = 4096
BLOB_BASE = 0x1000_0000


@st.composite
def blob_bytes(draw, order: str) -> Dict[str, Any]:
    """name -> (bytes or None for unreadable, pages the blob points to)."""
    blobs: Dict[str, Any] = {}
    if draw(st.booleans()):
        blobs["kexec-metadata"] = (kexec_metadata_blob(draw(text), draw(small),
                                                       draw(st.sampled_from([1, 2])), order), {})
    if draw(st.booleans()):
        blobs["LUO"] = (luo_blob(draw(small), draw(addr), draw(addr), byteorder=order), {})
    if draw(st.booleans()):
        blobs["memblock"] = (memblock_blob([("foo", draw(addr), draw(size))], order), {})
    if draw(st.booleans()):
        folios = draw(st.lists(st.tuples(st.integers(1, 1 << 20).map(lambda p: p << 12),
                                         st.integers(0, 10)), max_size=8))
        desc, pages = folio_list_pages(folios, [0x2000_0000], [0x3000_0000], order)
        if draw(st.booleans()):  # the chunk list was freed: the decoder fails
            pages = {}
        blobs["kho_test"] = (kho_test_blob(len(folios), desc, 0x1234, byteorder=order), pages)
    if draw(st.booleans()):
        blobs["kho_test_nochain"] = (kho_test_blob(0, kho_vmalloc_desc(0, 0, byteorder=order),
                                                   0, byteorder=order), {})
    if draw(st.booleans()):
        blobs["mystery"] = (draw(st.binary(max_size=40)), {})
    if draw(st.booleans()):
        blobs["unreadable"] = (None, {})
    return blobs


@st.composite
def fdt_reports(draw, orders=("little", "big")) -> KhoFdtReport:
    """Reports as :func:`kho_inspect.kho_fdt.read_kho_fdt` builds them, from bytes."""
    order = draw(st.sampled_from(orders))
    psize = PAGE
    blobs = draw(blob_bytes(order))
    placed = {name: BLOB_BASE + i * 0x10_0000 for i, name in enumerate(blobs)}
    root_data = kho_root_fdt(draw(st.none() | addr),
                             [(n, placed[n], None if b is None else len(b))
                              for n, (b, _) in blobs.items()], byteorder=order)
    root = decode_kho_root(root_data, order)
    direction = draw(st.sampled_from(["out", "in"]))
    reports = {}
    for sub in root.subtrees:
        data, pages = blobs[sub.name]
        if data is None:
            reports[sub.name] = BlobReport(sub.name, sub.phys, sub.size,
                                           error=f"KHO blob {sub.name} cannot be read.")
            continue
        decoded = decode_blob(sub.name, data, page_reader(pages), page_size=psize,
                              byteorder=order)
        stale = ("may be stale",) if direction == "in" and decoded.kind == "luo" else ()
        reports[sub.name] = BlobReport(sub.name, sub.phys, sub.size, data, decoded, notes=stale)
    return KhoFdtReport(direction, draw(u64), direction == "in", root_data, root, reports,
                        order, psize)


# --- check findings and diagnoses (kho_inspect.model.check, .diagnosis) ---------------------

json_values = st.none() | st.booleans() | small | text | st.lists(small, max_size=3).map(tuple)
evidences = st.builds(Evidence, text, st.none() | ranges, maybe_text, maybe_text,
                      st.lists(text, max_size=2).map(tuple), json_values, json_values, notes)
rule_infos = st.builds(RuleInfo, text, text, text, text, st.lists(text, max_size=2).map(tuple),
                       text)
rule_results = st.builds(RuleResult, rule_infos, st.sampled_from(STATUSES), text,
                         st.lists(evidences, max_size=2).map(tuple))
check_reports = st.builds(CheckReport, st.lists(rule_results, max_size=3).map(tuple), maybe_text,
                          maybe_text, maybe_text)
activations = st.builds(KhoActivation, st.sampled_from(ACTIVATION_STATES), text, maybe_text,
                        notes, sizing=..., luo=st.none() | st.booleans())

# --- snapshots (kho_inspect.model.snapshot; H6) ------------------------------------------

huge_pages = st.builds(HugePage, addr, size, nid, st.sampled_from(ORIGINS), text)
hugetlb_reports = st.builds(
    HugetlbReport, pages=st.lists(huge_pages, max_size=2).map(tuple),
    cma_areas=st.lists(st.builds(CmaArea, addr, size, nid, maybe_text), max_size=2).map(tuple))
snapshots = st.builds(
    Snapshot, release=maybe_text, command_line=maybe_text, arch=maybe_text,
    page_shift=st.integers(12, 16), memblock_flags=flag_tables,
    memory_nodes=st.lists(st.integers(0, 63), max_size=3).map(tuple),
    numa=st.none() | st.booleans(), scratch_alignment=st.none() | small,
    low_address_limit=st.none() | addr, kho_scratch_only=st.none() | st.booleans(),
    status=st.none() | statuses, activation=st.none() | activations,
    memblock=st.none() | memblock_states(), scratch=st.none() | scratch_reports(),
    preserved_out=st.none() | preserved_reports, preserved_in=st.none() | preserved_reports,
    fdt_out=st.none() | fdt_reports().map(fdt_summary),
    fdt_in=st.none() | fdt_reports().map(fdt_summary), hugetlb=st.none() | hugetlb_reports,
    image=st.none() | ranges, initrd=st.none() | ranges,
    reserve_mem=st.lists(reserve_mems, max_size=2).map(tuple),
    cma_areas=st.lists(st.builds(CmaRegion, text, addr, size, nid), max_size=2).map(tuple),
    taken_from=maybe_text, missing=st.dictionaries(text, text, max_size=2),
    corrupt=st.dictionaries(text, text, max_size=2), notes=notes)

# --- the property --------------------------------------------------------------------------

STRATEGIES: Dict[type, st.SearchStrategy] = {
    FlagTable: flag_tables,
    Region: regions,
    ReserveMem: reserve_mems,
    MemblockType: memblock_types,
    MemblockState: memblock_states(),
    PageblockLayout: layouts,
    PageblockRun: runs,
    ScratchArea: areas,
    ScratchClasses: st.builds(ScratchClasses, range_sets, range_sets, range_sets, range_sets,
                              maybe_text, maybe_text),
    CmaUsage: cma_usages,
    CmaCounters: st.builds(CmaCounters, st.none() | st.just("free_lists"), node_map, node_map),
    NodeUse: node_uses,
    ScratchReport: scratch_reports(),
    PreservedReport: preserved_reports,
    KhoStatus: statuses,
    KhoFdtReport: fdt_reports(),
    # A blob reads back with its report's context: its name (the key it is
    # shown under), the byte order (little here) and the page size.
    BlobReport: fdt_reports(("little",)).filter(lambda r: bool(r.blobs)).flatmap(
        lambda r: st.sampled_from(list(r.blobs.values()))),
    Evidence: evidences,
    RuleResult: rule_results,
    CheckReport: check_reports,
    KhoActivation: activations,
    Snapshot: snapshots,
}
"""Valid instances of each model type whose annotations are not enough."""


UNIMPORTABLE: Dict[str, str] = {}


def model_types():
    """Every dataclass defined in a module of :mod:`kho_inspect.model`."""
    found = []
    for info in pkgutil.iter_modules(kho_inspect.model.__path__):
        try:
            module = importlib.import_module(f"kho_inspect.model.{info.name}")
        except ImportError as e:  # reported by test_every_model_module_imports
            UNIMPORTABLE[info.name] = str(e)
            continue
        found += [obj for obj in vars(module).values()
                  if isinstance(obj, type) and dataclasses.is_dataclass(obj)
                  and obj.__module__ == module.__name__]
    return sorted(set(found), key=lambda t: (t.__module__, t.__name__))


def strategy(tp: type) -> st.SearchStrategy:
    if tp in STRATEGIES:
        return STRATEGIES[tp]
    # Generated from the annotations, every field (defaults included).
    return st.builds(tp, **{f.name: ... for f in dataclasses.fields(tp) if f.init})


def round_trip(tp: type, value: Any) -> Any:
    obj = json.loads(json.dumps(value.to_json()))
    if tp is BlobReport:
        return BlobReport.from_json(obj, name=value.name)
    return tp.from_json(obj)


@pytest.mark.parametrize("tp", model_types(), ids=lambda t: f"{t.__module__[12:]}.{t.__name__}")
def test_from_json_of_to_json_is_the_same_object(tp):
    if not hasattr(tp, "from_json") or not hasattr(tp, "to_json"):
        pytest.fail(f"{tp.__name__} has no to_json/from_json (derive from model.base.JsonModel)")

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy(tp))
    def check(value):
        assert round_trip(tp, value) == value

    check()


def test_every_model_module_imports():
    model_types()
    assert not UNIMPORTABLE


def test_my_types_are_all_in_the_table():
    mine = {"memblock", "pageblock", "scratch", "preserved", "kho"}
    missing = [t.__name__ for t in model_types()
               if t.__module__.rpartition(".")[2] in mine and t not in STRATEGIES]
    assert not missing


# --- what the round trip relies on ---------------------------------------------------------


@given(scratch_reports())
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_scratch_json_keeps_its_shape(report):
    obj = report.to_json()
    assert list(obj) == ["symbols", "kho_boot", "memblock", "areas", "flagged", "flags",
                         "extended_rule", "classes", "class_bytes", "migratetype", "nodes",
                         "total", "ram", "cma", "notes"]
    assert list(obj["cma"]) == ["method", "zone_cma_pages", "nr_free_cma_pages"]
    assert set(report.runs) == set(CLASSES)


def test_layout_json_names_byteorder_and_word_size_only_when_unusual():
    little = PageblockLayout(12, 27, 9, 8, 0x7, 0x10, {4: "CMA"})
    assert "byteorder" not in little.to_json() and "word_size" not in little.to_json()
    big = dataclasses.replace(little, byteorder="big", word_size=4)
    assert big.to_json()["byteorder"] == "big" and big.to_json()["word_size"] == 4
    assert PageblockLayout.from_json(big.to_json()) == big


@given(fdt_reports())
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_fdt_report_needs_its_bytes_to_read_back(report):
    with pytest.raises(KeyError):
        KhoFdtReport.from_json(json.loads(json.dumps(report.to_json(raw=False))))


def test_blob_report_reads_back_with_its_name():
    data = luo_blob(4, 0x1000, 0x2000)
    blob = BlobReport("LUO", BLOB_BASE, len(data), data, decode_blob("LUO", data))
    obj = json.loads(json.dumps(blob.to_json()))
    assert BlobReport.from_json(obj, name="LUO") == blob


def test_snapshot_origin_reads_back():
    report = PreservedReport("snapshot", ((GB, GB, 18),), origin={"file": "n.json",
                                                                  "source": "out",
                                                                  "kernel": "7.3.4"})
    assert round_trip(PreservedReport, report) == report

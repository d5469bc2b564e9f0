# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshots at two scales for the report, memory map and metrics tests.

:func:`guest` is a 6 GiB QEMU guest like the lab's (x86_64, one node, the
PCI hole at [2, 4) GiB, two boot-time 1 GiB pages, a KHO boot on Linux 7.3).
:func:`host` is a 4 TiB, four-node host with thousands of preserved ranges,
hundreds of reserved regions and 1 GiB pages on every node, and a 64 GiB
hole between nodes 2 and 3. Both are plain model objects built with the
model's own functions (:func:`~kho_inspect.model.scratch.classify`,
:func:`~kho_inspect.model.scratch.build_report`); :func:`checks` makes a
:class:`CheckReport` where chosen rules fail with chosen evidence.
"""

import random
from dataclasses import replace
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from synth.mm import FLAGS_73

from kho_inspect.checks import catalogue
from kho_inspect.model.check import CheckReport, Evidence, RuleResult
from kho_inspect.model.diagnosis import KhoActivation
from kho_inspect.model.hugetlb import CmaArea, HugePage, HugetlbReport
from kho_inspect.model.kho import KhoStatus
from kho_inspect.model.memblock import MemblockState, MemblockType, Region, ReserveMem
from kho_inspect.model.pageblock import PageblockRun
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.scratch import CmaUsage, build_report, classify
from kho_inspect.model.snapshot import FdtSummary, Snapshot
from kho_inspect.ranges import Range, RangeSet

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def _memblock(memory: Sequence[Region], reserved: Sequence[Region],
              reserve_mem: Sequence[ReserveMem] = ()) -> MemblockState:
    def mtype(name: str, regions: Sequence[Region]) -> MemblockType:
        return MemblockType(name, tuple(regions), len(regions), max(128, len(regions)),
                            sum(r.size for r in regions))

    return MemblockState({"memory": mtype("memory", memory),
                          "reserved": mtype("reserved", reserved)}, FLAGS_73,
                         reserve_mem=tuple(reserve_mem), bottom_up=False,
                         current_limit=(1 << 64) - 1)


def _flag_memory(nodes: Sequence[Tuple[Range, Optional[int]]], scratch: RangeSet
                 ) -> List[Region]:
    """``memblock.memory`` split where the KHO_SCRATCH flag starts and stops."""
    out = []
    for rng, nid in nodes:
        inside = RangeSet([rng]) & scratch
        cuts = sorted({rng.base, rng.end, *(x for r in inside for x in (r.base, r.end))})
        for lo, hi in zip(cuts, cuts[1:]):
            flags = ("KHO_SCRATCH",) if lo in inside else ()
            out.append(Region(lo, hi - lo, flags, nid))
    return out


def _preserved(blocks: Iterable[Tuple[int, int]], tree: Sequence[int], release: str,
               source: str = "out") -> PreservedReport:
    ranges = tuple(sorted((phys, 4 * KIB << order, order) for phys, order in blocks))
    histogram: Dict[int, int] = {}
    for _, _, order in ranges:
        histogram[order] = histogram.get(order, 0) + 1
    return PreservedReport(source=source, ranges=ranges, tree_pages=tuple(tree),
                           histogram=dict(sorted(histogram.items())),
                           root=tree[0] if tree else None, kernel=release)


def _snapshot(*, release: str, memory: Sequence[Tuple[Range, Optional[int]]],
              areas: Sequence[Range], nodes: Sequence[int], busy: RangeSet,
              reserved: Sequence[Region], out: PreservedReport, incoming: PreservedReport,
              pages: Sequence[HugePage], cma: Sequence[CmaArea], image: Range, initrd: Range,
              reserve_mem: Sequence[ReserveMem], command_line: str) -> Snapshot:
    ram = RangeSet(r for r, _ in memory)
    original = RangeSet(areas)
    gib_blocks = RangeSet(Range(b, GIB) for b in range(0, ram.ranges[-1].end, GIB)
                          if RangeSet([Range(b, GIB)]) & ram == RangeSet([Range(b, GIB)]))
    extended = gib_blocks - busy
    regions = _flag_memory(memory, original | extended)
    state = _memblock(regions, reserved, reserve_mem)
    classes = classify(original, regions, FLAGS_73)
    runs = {"original": tuple(PageblockRun(r.base, r.size, "CMA") for r in original),
            "extended": tuple(PageblockRun(r.base, r.size, "MOVABLE")
                              for r in classes.extended)}
    scratch = build_report(symbols=("kho_scratch", "kho_scratch_cnt"), array=areas,
                           nodes=nodes, memblock=state, classes=classes, runs=runs,
                           layout=None, usage=CmaUsage(None, {}, {}), totalram=ram.total,
                           kho_boot=True)
    status = KhoStatus(release=release, enabled=True, kho_boot=True, kexec_count=1,
                       previous_release=release.replace("-n1", "-n0"), next_kexec_count=2,
                       compatible="kho-v4", compatible_in="kho-v4", luo=True,
                       liveupdate_num=1, memblock_flags=FLAGS_73,
                       fdt_out=0xFFFF_8880_0345_6000, scratch_in_phys=0x7FFF_0000,
                       scratch_areas=len(areas))
    return Snapshot(
        release=release, command_line=command_line, arch="x86_64",
        memblock_flags=FLAGS_73, memory_nodes=tuple(nodes), numa=len(nodes) > 1,
        scratch_alignment=4 * MIB, low_address_limit=0xFFFF_FFFF, kho_scratch_only=False,
        status=status,
        activation=KhoActivation("active", "KHO is active", "kho=on on the command line",
                                 luo=True),
        memblock=state, scratch=scratch, preserved_out=out, preserved_in=incoming,
        fdt_out=FdtSummary("out", address=0xFFFF_8880_0345_6000, compatible="kho-v4",
                           mem_map_phys=out.root),
        fdt_in=FdtSummary("in", address=0x1_0345_6000, compatible="kho-v4"),
        hugetlb=HugetlbReport(pages=tuple(pages), cma_areas=tuple(cma)),
        image=image, initrd=initrd, reserve_mem=tuple(reserve_mem), taken_from="vmcore",
    )


# --- a 6 GiB guest ---------------------------------------------------------------------


GUEST_PAGES = (Range(5 * GIB, GIB), Range(6 * GIB, GIB))
GUEST_AREAS = (Range(0x7000_0000, 128 * MIB), Range(0x1_0000_0000 + 512 * MIB, 256 * MIB),
               Range(0x1_C000_0000, 256 * MIB))
GUEST_FOO = ReserveMem("foo", 0x1_2000_0000, 16 * MIB)
GUEST_HANDED_OVER = [(0x1_2000_0000, 12), (0x3E00_0000, 0), (0x3E20_0000, 9), (0x1_1C00_0000, 4)]
"""``(phys, order)`` kernel N preserved and N+1 received."""


def guest() -> Snapshot:
    """Kernel N+1 of a 6 GiB guest (the lab's machine), just after a KHO boot."""
    memory = [(Range(0x1000, 0x9E000), 0), (Range(0x10_0000, 2 * GIB - 0x10_0000), 0),
              (Range(4 * GIB, 4 * GIB), 0)]
    image, initrd = Range(0x100_0000, 46 * MIB), Range(0x7C00_0000, 24 * MIB)
    out_blocks = [(0x1_2000_0000, 12), (0x3F00_0000, 0), (0x3F01_0000, 2), (0x1_1800_0000, 9),
                  (0x1_1A00_0000, 0)]
    in_blocks = GUEST_HANDED_OVER
    reserved = [Region(0, 0x1000), Region(image.base, image.size), Region(initrd.base,
                                                                         initrd.size),
                Region(0x7FF0_0000, 0xF_0000, ("RSRV_KERN",)),
                Region(0x1_FF00_0000, 16 * MIB, ("RSRV_KERN",))]
    reserved += [Region(p, 4 * KIB << o, ("RSRV_NOINIT",)) for p, o in in_blocks]
    reserved += [Region(p.base, p.size, ("RSRV_KERN", "RSRV_HUGETLB")) for p in GUEST_PAGES]
    busy = RangeSet([Range(0, GIB), Range(4 * GIB, GIB), Range(5 * GIB, 2 * GIB),
                     Range(7 * GIB, GIB)])
    return _snapshot(
        release="7.3.4-n1",
        memory=memory, areas=GUEST_AREAS, nodes=(0,), busy=busy,
        reserved=sorted(reserved, key=lambda r: r.base),
        out=_preserved(out_blocks, (0x1_1B00_0000, 0x1_1B00_1000), "7.3.4-n1"),
        incoming=_preserved(in_blocks, (), "7.3.4-n1", source="reserved"),
        pages=[HugePage(p.base, p.size, 0, "boot", "free") for p in GUEST_PAGES],
        cma=(), image=image, initrd=initrd, reserve_mem=(GUEST_FOO,),
        command_line="console=ttyS0 kho=on liveupdate=on reserve_mem=16M:4K:foo "
                     "hugepagesz=1G hugepages=2 memblock=debug",
    )


def previous_guest() -> Snapshot:
    """Kernel N of :func:`guest`: cold booted, without gigantic pages, preserving
    what N+1 receives."""
    snap = guest()
    assert snap.status is not None
    status = replace(snap.status, release="7.3.4-n0", kho_boot=False, kexec_count=0,
                     previous_release=None, next_kexec_count=1, compatible_in=None)
    return replace(
        snap, release="7.3.4-n0", status=status, preserved_in=None, fdt_in=None,
        preserved_out=_preserved(GUEST_HANDED_OVER, (0x1_1D00_0000,), "7.3.4-n0"),
        hugetlb=HugetlbReport(pages=()), command_line="console=ttyS0 kho=on liveupdate=on "
                                              "reserve_mem=16M:4K:foo memblock=debug",
        missing={"preserved_in": "this kernel was not booted through KHO",
                 "fdt_in": "this kernel was not booted through KHO"})


# --- a 4 TiB host ----------------------------------------------------------------------


def _host_nodes() -> List[Tuple[Range, int]]:
    top = 4 * GIB
    nodes = [(Range(0x1000, 0x9E000), 0), (Range(0x10_0000, 2 * GIB - 0x10_0000), 0)]
    for nid in range(4):
        if nid == 3:
            top += 64 * GIB  # a hole between nodes 2 and 3
        size = TIB - (2 * GIB if nid == 0 else 0)
        nodes.append((Range(top, size), nid))
        top += size
    return nodes


def host(seed: int = 7) -> Snapshot:
    """A 4 TiB host with four nodes, after a KHO boot, with thousands of objects."""
    rnd = random.Random(seed)
    memory = _host_nodes()
    big = [r for r, _ in memory[2:]]
    areas = [Range(0x4000_0000, 512 * MIB), Range(big[0].base + 32 * GIB, 64 * GIB)]
    areas += [Range(r.base + r.size // 2, 32 * GIB) for r in big]
    pages = []
    for nid, r in enumerate(big):
        start = r.end - 300 * GIB
        pages += [HugePage(start + i * GIB, GIB, nid, "boot", "free") for i in range(200)]
    cma = [CmaArea(big[3].base + 100 * GIB, 64 * GIB, 3)]
    pages += [HugePage(big[3].base + 100 * GIB + i * GIB, GIB, 3, "cma", "in use")
              for i in range(8)]

    def scatter(n: int) -> List[Tuple[int, int]]:
        out = []
        for _ in range(n):
            r = rnd.choice(big)
            order = rnd.choice((0, 0, 0, 1, 2, 4, 9))
            out.append((r.base + rnd.randrange(r.size >> 22) * (4 * MIB), order))
        return out

    out_blocks, in_blocks = scatter(3000), scatter(2500)
    image, initrd = Range(0x100_0000, 64 * MIB), Range(0x7000_0000, 96 * MIB)
    reserved = [Region(0, 0x1000), Region(image.base, image.size),
                Region(initrd.base, initrd.size)]
    for nid, r in enumerate(big):
        reserved.append(Region(r.end - 16 * GIB, 16 * GIB, ("RSRV_KERN",), nid))  # memmap
        reserved += [Region(r.end - 17 * GIB + i * 8 * MIB, 4 * MIB, ("RSRV_KERN",), nid)
                     for i in range(100)]
    reserved += [Region(p, 4 * KIB << o, ("RSRV_NOINIT",)) for p, o in dict(in_blocks).items()]
    reserved += [Region(p.phys, p.size, ("RSRV_KERN", "RSRV_HUGETLB"), p.node) for p in pages
                 if p.origin == "boot"]
    busy = RangeSet(Range(p - p % GIB, GIB) for p, _ in out_blocks + in_blocks)
    busy = busy | RangeSet(r.range for r in reserved) | RangeSet([Range(0, 4 * GIB)])
    tree = [big[1].base + 7 * GIB + i * 4 * KIB for i in range(40)]
    return _snapshot(
        release="7.3.4-n1",
        memory=memory, areas=areas, nodes=(0, 1, 2, 3), busy=busy,
        reserved=_disjoint(reserved),
        out=_preserved(dict(out_blocks).items(), tree, "7.3.4-n1"),
        incoming=_preserved(dict(in_blocks).items(), (), "7.3.4-n1", source="reserved"),
        pages=pages, cma=cma, image=image, initrd=initrd, reserve_mem=(),
        command_line="kho=on hugepagesz=1G hugepages=800 hugetlb_cma=64G",
    )


def _disjoint(regions: Iterable[Region]) -> List[Region]:
    out: List[Region] = []
    for r in sorted(regions, key=lambda r: (r.base, -r.size)):
        if out and r.base < out[-1].end:
            continue
        out.append(r)
    return out


# --- check results ----------------------------------------------------------------------


def checks(failures: Mapping[str, Sequence[Evidence]] = (),
           skips: Mapping[str, str] = ()) -> CheckReport:
    """Every catalogued rule passing, except ``failures`` (with that evidence)
    and ``skips`` (with that reason)."""
    failures, skips = dict(failures), dict(skips)
    results = []
    for info in catalogue():
        if info.id in failures:
            results.append(RuleResult(info, "fail", "checked", tuple(failures[info.id])))
        elif info.id in skips:
            results.append(RuleResult(info, "skip", skips[info.id]))
        else:
            results.append(RuleResult(info, "pass", "checked"))
    return CheckReport(tuple(results), release="7.3.4-n1", previous="7.3.4-n0",
                       generation="7.3")


def page_in_scratch(page: Range, area: str = "kho_scratch[1] (global)") -> Evidence:
    """The evidence of a gigantic boot page placed in original scratch."""
    return Evidence(f"hugetlb boot page {page} overlaps original scratch {area}", page,
                    "hugetlb boot page, node 0", "original", ("KHO_SCRATCH",))

# SPDX-License-Identifier: LGPL-2.1-or-later
"""hugetlb state for synthetic kernels (Linux 7.3 x86_64 layout).

:func:`add_hugetlb` puts into a :class:`synth.kernel.SynthKernel` that
already has :func:`synth.mm.add_mm`'s state (the struct page array at
``vmemmap``, nodes and zones) what ``kho-inspect hugetlb`` reads
(include/linux/hugetlb.h, mm/hugetlb.c, mm/hugetlb_cma.c, mm/cma.h):

* ``struct hstate hstates[HUGE_MAX_HSTATE]`` and ``hugetlb_max_hstate``, with
  the 7.3 offsets of ``order``, the counters, ``hugepage_activelist``,
  ``hugepage_freelists[MAX_NUMNODES]``, the per-node counters and ``name``;
* the folios themselves in the struct page array: ``folio->lru`` links each
  one into its hstate's free list (node ``folio_nid()``) or active list, the
  way ``enqueue_hugetlb_folio()`` and ``alloc_hugetlb_folio()`` do, and
  ``folio->private`` holds its ``enum hugetlb_page_flags`` bits
  (``HPG_freed`` on a free folio, ``HPG_cma`` on a CMA one);
* ``enum hugetlb_page_flags`` (with ``HPG_cma`` since v6.15, without before);
* ``struct cma`` (``ranges[]``/``nranges`` since v6.15, ``base_pfn``/``count``
  before), ``static struct cma *hugetlb_cma[MAX_NUMNODES]`` and
  ``hugetlb_cma_size`` (what ``hugetlb_cma_reserve()`` reserved in total).

Counters are what the folios add up to unless :class:`HugetlbSpec` says
otherwise, so a test compares the reader's output with :class:`HugetlbLayout`.
Boot-time pages differ from buddy ones only outside hugetlb: the memblock
reservations :func:`boot_reservations` returns, or the ``memblock=debug``
lines of :func:`boot_log`.
"""

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from drgn import Program, Type, TypeEnumerator, TypeMember, sizeof
from synth.kernel import DIRECT_MAP, SynthKernel, pack
from synth.memblock import GENERATIONS, RawRegion, add_memblock
from synth.mm import VMEMMAP, MmLayout, MmSpec, add_mm, memory_regions
from synth.printk import add_printk

__all__ = ["GIB", "HPG_FLAGS", "HugeFolio", "CmaSpec", "HugetlbSpec", "HugetlbLayout",
           "add_hugetlb", "boot_reservations", "boot_log", "hugetlb_kernel"]

GIB = 1 << 30
PAGE_SHIFT = 12
STRUCT_PAGE_SIZE = 64
FOLIO_LRU, FOLIO_PRIVATE = 8, 40  # offsetof(struct folio, lru / private), 7.3 x86_64

# include/linux/hugetlb.h:583-592 (Linux 7.3).
HPG_FLAGS = (("HPG_restore_reserve", 0), ("HPG_migratable", 1), ("HPG_temporary", 2),
             ("HPG_freed", 3), ("HPG_vmemmap_optimized", 4), ("HPG_raw_hwp_unreliable", 5),
             ("HPG_cma", 6), ("__NR_HPAGEFLAGS", 7))
HPG_FLAGS_OLD = (*HPG_FLAGS[:6], ("__NR_HPAGEFLAGS", 6))
"""Before v6.15 ("mm/hugetlb: enable bootmem allocation from CMA areas"): no ``HPG_cma``."""


@dataclass(frozen=True)
class HugeFolio:
    """One hugetlb folio as the bench places it.

    :param state: ``"free"``, ``"in use"``, or ``"gone"``: freed back to the
        page allocator since boot (on no list, counted nowhere; a boot page
        keeps its memblock reservation and log lines).
    :param hstate: index into :attr:`HugetlbSpec.hstates`.
    :param origin: what the reader should find (``boot``, ``buddy``, ``cma``);
        ``boot`` pages get memblock reservations / log lines from the helpers.
    :param flags: more ``HPG_*`` names set in ``folio->private``.
    """

    phys: int
    state: str = "free"
    origin: str = "buddy"
    hstate: int = 0
    flags: Tuple[str, ...] = ()


@dataclass(frozen=True)
class CmaSpec:
    """``hugetlb_cma[node]``: ``(base, size)`` ranges and the area's name."""

    node: int
    ranges: Tuple[Tuple[int, int], ...]

    @property
    def name(self) -> str:
        return f"hugetlb{self.node}"  # hugetlb_cma_reserve(), mm/hugetlb_cma.c:352


@dataclass
class HugetlbSpec:
    """What to put into the kernel.

    :param nodes: the RAM of each node ``(start, end)`` (as given to ``add_mm``);
        ``None``: a kernel without NUMA (``MAX_NUMNODES`` 1, every node ``None``).
    :param hstates: ``(name, order)`` of each hstate.
    :param hpg_cma: the enum has ``HPG_cma`` (v6.15+).
    :param multi_range_cma: ``struct cma`` has ``ranges[]`` (v6.15+).
    :param extra_pages: hstate index -> pages its ``nr_huge_pages`` counts
        beyond the listed folios (folios on no list).
    """

    nodes: Optional[Sequence[Tuple[int, int]]]
    folios: Sequence[HugeFolio] = ()
    cma: Sequence[CmaSpec] = ()
    hstates: Sequence[Tuple[str, int]] = (("hugepages-1048576kB", 18), ("hugepages-2048kB", 9))
    hpg_cma: bool = True
    multi_range_cma: bool = True
    extra_pages: Mapping[int, int] = field(default_factory=dict)

    def node_of(self, phys: int) -> Optional[int]:
        if self.nodes is None:
            return None
        return next(n for n, (s, e) in enumerate(self.nodes) if s <= phys < e)

    def size(self, folio: HugeFolio) -> int:
        return 1 << (self.hstates[folio.hstate][1] + PAGE_SHIFT)


@dataclass
class HugetlbLayout:
    """Where :func:`add_hugetlb` put things, and what a reader must report."""

    hstates: int
    cma: int
    expected_pages: List[Dict[str, object]] = field(default_factory=list)
    expected_cma: List[Dict[str, object]] = field(default_factory=list)


def _types(kernel: SynthKernel, spec: HugetlbSpec, max_numnodes: int) -> Dict[str, Type]:
    prog = kernel.prog
    ul = prog.int_type("unsigned long", 8, False)
    uint = prog.int_type("unsigned int", 4, False)
    int_ = prog.int_type("int", 4, True)
    char = prog.int_type("char", 1, True)
    list_head = prog.type("struct list_head")
    void_p = prog.pointer_type(prog.void_type())
    hpg = prog.enum_type("hugetlb_page_flags", uint, [
        TypeEnumerator(n, v) for n, v in (HPG_FLAGS if spec.hpg_cma else HPG_FLAGS_OLD)])
    folio = prog.struct_type("folio", 256, (
        TypeMember(ul, "flags", 0), TypeMember(list_head, "lru", FOLIO_LRU * 8),
        TypeMember(void_p, "private", FOLIO_PRIVATE * 8), TypeMember(ul, "_flags_1", 512)))
    nodes = max_numnodes
    per_node = 4 * nodes
    base = 112 + 16 * nodes  # after hugepage_freelists[]
    hstate = prog.struct_type("hstate", base + 3 * per_node + 32, (
        TypeMember(uint, "order", 32 * 8), TypeMember(ul, "nr_huge_pages", 56 * 8),
        TypeMember(ul, "free_huge_pages", 64 * 8), TypeMember(ul, "resv_huge_pages", 72 * 8),
        TypeMember(ul, "surplus_huge_pages", 80 * 8),
        TypeMember(list_head, "hugepage_activelist", 96 * 8),
        TypeMember(prog.array_type(list_head, nodes), "hugepage_freelists", 112 * 8),
        TypeMember(prog.array_type(uint, nodes), "nr_huge_pages_node", base * 8),
        TypeMember(prog.array_type(uint, nodes), "free_huge_pages_node", (base + per_node) * 8),
        TypeMember(prog.array_type(uint, nodes), "surplus_huge_pages_node",
                   (base + 2 * per_node) * 8),
        TypeMember(prog.array_type(char, 32), "name", (base + 3 * per_node) * 8)))
    memrange = prog.struct_type("cma_memrange", 40, (
        TypeMember(ul, "base_pfn", 0), TypeMember(ul, "count", 64)))
    if spec.multi_range_cma:  # mm/cma.h, 7.3
        cma = prog.struct_type("cma", 464, (
            TypeMember(ul, "count", 0), TypeMember(prog.array_type(char, 64), "name", 60 * 8),
            TypeMember(int_, "nranges", 124 * 8),
            TypeMember(prog.array_type(memrange, 8), "ranges", 128 * 8),
            TypeMember(int_, "nid", 456 * 8)))
    else:  # before v6.15
        cma = prog.struct_type("cma", 96, (
            TypeMember(ul, "base_pfn", 0), TypeMember(ul, "count", 64),
            TypeMember(prog.array_type(char, 64), "name", 32 * 8)))
    for t in (hpg, folio, hstate, memrange, cma):
        kernel.add_type(t)
    return {"hstate": hstate, "cma": cma, "memrange": memrange, "int": int_}


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _private(spec: HugetlbSpec, folio: HugeFolio) -> int:
    names = dict(HPG_FLAGS if spec.hpg_cma else HPG_FLAGS_OLD)
    wanted = set(folio.flags) | ({"HPG_freed"} if folio.state == "free" else set())
    if folio.origin == "cma" and spec.hpg_cma:
        wanted.add("HPG_cma")
    return sum(1 << names[n] for n in wanted)


def _link(layout: MmLayout, head: int, folios: Sequence[HugeFolio]) -> Tuple[int, int]:
    """Link ``folios`` (in this order) into the list at ``head``; its ``(next, prev)``."""
    entries = [VMEMMAP + (f.phys >> PAGE_SHIFT) * STRUCT_PAGE_SIZE + FOLIO_LRU for f in folios]
    ring = [head, *entries]
    for i, entry in enumerate(entries, start=1):
        nxt, prev = ring[(i + 1) % len(ring)], ring[i - 1]
        layout.vmemmap.write(entry - VMEMMAP, _u64(nxt) + _u64(prev))
    return (ring[1], ring[-1]) if entries else (head, head)


def _hstate_values(spec: HugetlbSpec, layout: MmLayout, index: int, address: int,
                   numnodes: int) -> Dict[str, object]:
    name, order = spec.hstates[index]
    mine = [f for f in spec.folios if f.hstate == index and f.state != "gone"]
    values: Dict[str, object] = {"order": order, "name": name.encode()}
    nodes = [spec.node_of(f.phys) or 0 for f in mine]
    free = [f for f in mine if f.state == "free"]
    extra = spec.extra_pages.get(index, 0)
    values.update(nr_huge_pages=len(mine) + extra, free_huge_pages=len(free),
                  resv_huge_pages=0, surplus_huge_pages=0)
    for nid in range(numnodes):
        values[f"nr_huge_pages_node[{nid}]"] = nodes.count(nid) + (extra if nid == 0 else 0)
        values[f"free_huge_pages_node[{nid}]"] = sum(
            1 for f, n in zip(mine, nodes) if n == nid and f.state == "free")
        head = address + 112 + 16 * nid
        values[f"hugepage_freelists[{nid}].next"], values[f"hugepage_freelists[{nid}].prev"] = \
            _link(layout, head, [f for f in free if (spec.node_of(f.phys) or 0) == nid])
    active = address + 96
    values["hugepage_activelist.next"], values["hugepage_activelist.prev"] = _link(
        layout, active, [f for f in mine if f.state != "free"])
    return values


def _pack(t: Type, values: Mapping[str, object]) -> bytes:
    # synth.kernel.pack() takes dotted member paths; arrays are written here by index.
    raw = bytearray(pack(t, {k: v for k, v in values.items() if "[" not in k}))  # type: ignore
    for key, value in values.items():
        if "[" not in key:
            continue
        member, rest = key.split("[", 1)
        index, tail = rest.split("]", 1)
        array = t.member(member)
        element = array.type.type
        offset = array.bit_offset // 8 + int(index) * sizeof(element)
        if tail:
            sub = element.member(tail.lstrip("."))
            offset += sub.bit_offset // 8
            size = sizeof(sub.type)
        else:
            size = sizeof(element)
        raw[offset:offset + size] = int(value).to_bytes(size, "little")  # type: ignore
    return bytes(raw)


def _add_cma(kernel: SynthKernel, spec: HugetlbSpec, types: Mapping[str, Type],
             numnodes: int, out: HugetlbLayout) -> None:
    prog = kernel.prog
    cma_t = types["cma"]
    pointers = [0] * numnodes
    for area in spec.cma:
        values: Dict[str, object] = {"name": area.name.encode()}
        if spec.multi_range_cma:
            values.update(nranges=len(area.ranges), nid=area.node,
                          count=sum(s for _, s in area.ranges) >> PAGE_SHIFT)
            for i, (base, size) in enumerate(area.ranges):
                values[f"ranges[{i}].base_pfn"] = base >> PAGE_SHIFT
                values[f"ranges[{i}].count"] = size >> PAGE_SHIFT
        else:
            (base, size), = area.ranges
            values.update(base_pfn=base >> PAGE_SHIFT, count=size >> PAGE_SHIFT)
        phys = kernel.alloc_phys(sizeof(cma_t))
        kernel.write_phys(phys, _pack(cma_t, values))
        pointers[area.node if spec.nodes is not None else 0] = DIRECT_MAP + phys
        node = area.node if spec.nodes is not None else None
        out.expected_cma += [{"base": b, "size": s, "node": node, "name": area.name}
                             for b, s in area.ranges]
    total = sum(size for area in spec.cma for _, size in area.ranges)
    kernel.add_variable("hugetlb_cma_size", prog.int_type("unsigned long", 8, False),
                        _u64(total))
    out.cma = kernel.add_variable("hugetlb_cma", prog.array_type(prog.pointer_type(cma_t),
                                                                 numnodes),
                                  b"".join(map(_u64, pointers)))


def add_hugetlb(kernel: SynthKernel, layout: MmLayout, spec: HugetlbSpec) -> HugetlbLayout:
    """Put the hugetlb state described by ``spec`` into ``kernel``."""
    numnodes = 64 if spec.nodes is not None else 1  # MAX_NUMNODES: 1 << CONFIG_NODES_SHIFT
    types = _types(kernel, spec, numnodes)
    hstate_t = types["hstate"]
    array_t = kernel.prog.array_type(hstate_t, len(spec.hstates))
    address = kernel.add_variable("hstates", array_t)
    kernel.add_variable("hugetlb_max_hstate", types["int"],
                        struct.pack("<i", len(spec.hstates)))
    data = b"".join(_pack(hstate_t, _hstate_values(spec, layout, i,
                                                    address + i * sizeof(hstate_t), numnodes))
                    for i in range(len(spec.hstates)))
    kernel.write_variable("hstates", data)
    out = HugetlbLayout(address, 0)
    live = [f for f in spec.folios if f.state != "gone"]
    for f in live:
        layout.vmemmap.write((f.phys >> PAGE_SHIFT) * STRUCT_PAGE_SIZE + FOLIO_PRIVATE,
                             _u64(_private(spec, f)))
    out.expected_pages = sorted(({
        "phys": f.phys, "size": spec.size(f), "node": spec.node_of(f.phys),
        "origin": f.origin, "state": f.state,
    } for f in live if spec.hstates[f.hstate][1] > 10), key=lambda p: p["phys"])
    _add_cma(kernel, spec, types, numnodes, out)
    return out


def boot_reservations(spec: HugetlbSpec, generation: str = "7.3") -> List[RawRegion]:
    """The ``memblock.reserved`` regions of the spec's boot pages, as
    ``alloc_bootmem_huge_page()`` leaves them (mm/hugetlb.c:3132-3180): the
    head page ``RSRV_KERN|RSRV_HUGETLB``, the tail also ``RSRV_NOINIT``
    (on generations without ``RSRV_HUGETLB``: ``RSRV_KERN`` alone)."""
    gen = GENERATIONS[generation]
    names = dict(gen.flags)
    hugetlb = names.get("MEMBLOCK_RSRV_HUGETLB", 0)
    kern, noinit = names["MEMBLOCK_RSRV_KERN"], names["MEMBLOCK_RSRV_NOINIT"]
    out = []
    for f in spec.folios:
        if f.origin != "boot":
            continue
        nid = spec.node_of(f.phys) or 0
        out.append(RawRegion(f.phys, 4096, kern | hugetlb, nid))
        out.append(RawRegion(f.phys + 4096, spec.size(f) - 4096, kern | hugetlb | noinit, nid))
    return sorted(out)  # memblock keeps its regions sorted


def boot_log(spec: HugetlbSpec, release: str = "7.3.4") -> List[str]:
    """A ``memblock=debug`` boot log with the spec's boot pages (7.3 formats,
    docs/kernel/memblock.md#debug-log)."""
    lines = [f"Linux version {release} (synth) #1 SMP", "Command line: memblock=debug",
             "memblock_alloc_try_nid: 4096 bytes align=0x1000 nid=-1 from=0x0000000000000000 "
             "max_addr=0x0000000000000000 alloc_node_data+0x5c/0x1a0",
             "__memblock_reserve: [0x000000000fff0000-0x000000000fff0fff] nid=-1 flags=20 "
             "memblock_alloc_range_nid+0x104/0x1b0"]
    for f in spec.folios:
        if f.origin != "boot":
            continue
        size, nid = spec.size(f), spec.node_of(f.phys)
        nid = -1 if nid is None else nid
        lines += [f"memblock_alloc_hugetlb: {size} bytes, nid={nid}, exact_nid=0 "
                  "alloc_bootmem+0x2e/0x60",
                  f"__memblock_reserve: [{f.phys:#018x}-{f.phys + size - 1:#018x}] nid={nid} "
                  "flags=a0 memblock_alloc_hugetlb+0x97/0x120"]
    return lines + ["SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=2, Nodes=2"]


def hugetlb_kernel(spec: HugetlbSpec, generation: str = "7.3",
                   log: Optional[Sequence[str]] = None,
                   ram_nodes: Sequence[Tuple[int, int]] = ((0, 8 * GIB),)
                   ) -> Tuple[Program, SynthKernel, MmLayout, HugetlbLayout]:
    """A whole kernel: mm state, memblock of ``generation`` (with the boot
    pages' reservations; discarded after boot on generations that do not keep
    it), the hugetlb state of ``spec`` and, when given, a kernel log.

    :param ram_nodes: the nodes when ``spec.nodes`` is ``None`` (no NUMA).
    """
    nodes = list(spec.nodes) if spec.nodes is not None else list(ram_nodes)
    kernel = SynthKernel(ram_size=max(e for _, e in nodes))
    mm = add_mm(kernel, MmSpec(nodes))
    gen = GENERATIONS[generation]
    memory = [RawRegion(r.base, r.size, 0, r.nid or 0) for r in memory_regions(nodes)]
    add_memblock(kernel, gen, memory=memory, reserved=boot_reservations(spec, generation))
    layout = add_hugetlb(kernel, mm, spec)
    if log is not None:
        add_printk(kernel, log)
    return kernel.prog, kernel, mm, layout

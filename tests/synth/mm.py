# SPDX-License-Identifier: LGPL-2.1-or-later
"""Memory-management state for synthetic kernels (Linux 7.3 x86_64 layout).

What ``kho scratch`` and ``kho preserved`` read besides memblock and the KHO
globals, placed into a synthetic kernel built with the methods of
:class:`synth.kernel.SynthKernel` (``prog``, ``write_phys``, ``alloc_phys``,
``add_type``, ``add_variable``):

* the scratch array ``kho_scratch``/``kho_scratch_cnt`` (or any other
  spelling, e.g. ``kho_bootmem``), :func:`add_scratch`;
* NUMA nodes: ``node_states``, ``nr_node_ids``, ``node_data[]`` (with
  ``node_start_pfn``/``node_spanned_pages``) with one populated zone per node
  (``present_pages``, ``cma_pages``, ``vm_stat``,
  ``free_area[order].free_list[migratetype]``), ``_totalram_pages``;
* SPARSEMEM: ``mem_section`` (SPARSEMEM_EXTREME roots) with a
  ``mem_section_usage`` per present section whose ``pageblock_flags`` hold
  the migratetype of every pageblock;
* ``iomem_resource`` with a "System RAM" child per node;
* the struct page array at ``vmemmap`` (``page->private``, ``page->buddy_list``);
* the constants drgn would take from vmcoreinfo or DWARF enumerators
  (``SECTION_SIZE_BITS``, ``MIGRATE_CMA``, ``N_MEMORY``, ...), served by an
  object finder;
* a radix tree encoded by :mod:`radix_encoder` placed in physical memory,
  :func:`place_radix_tree`; and :func:`memory_regions`, which splits RAM into
  memblock-style regions by flag, for :class:`kho_inspect.model.MemblockState`
  (:mod:`synth.memblock` writes such regions into the kernel itself).

:func:`add_mm` does it all from a small description (:class:`MmSpec`).
"""

import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from drgn import Object, Program, Type, TypeEnumerator, TypeMember, offsetof, sizeof
from radix_encoder import RadixTreeEncoder
from synth.kernel import DIRECT_MAP, PAGE_SIZE, SynthKernel, read_sparse
from synth.memblock import GENERATIONS

from kho_inspect.model import FlagTable, MemblockState, MemblockType, Region
from kho_inspect.ranges import Range, RangeSet

__all__ = [
    "VMEMMAP",
    "SECTION_SIZE_BITS",
    "PAGEBLOCK_ORDER",
    "MAX_PAGE_ORDER",
    "MIGRATETYPES",
    "KHO_PAGE_MAGIC",
    "FLAGS_73",
    "FLAGS_V1",
    "FLAGS_UNPRESERVED",
    "MmSpec",
    "MmLayout",
    "mm_types",
    "add_mm",
    "add_scratch",
    "memory_regions",
    "memblock_state",
    "place_radix_tree",
    "add_kho_v1",
]

PAGE_SHIFT = 12
VMEMMAP = 0xFFFF_EA00_0000_0000
"""x86_64 ``vmemmap_base`` without KASLR: ``struct page`` of pfn n at ``VMEMMAP + 64 n``."""
SECTION_SIZE_BITS = 27
MAX_PHYSMEM_BITS = 46
PAGEBLOCK_ORDER = 9  # min(HPAGE_PMD_ORDER, PAGE_BLOCK_MAX_ORDER) with THP
MAX_PAGE_ORDER = 10
NR_PAGEBLOCK_BITS = 8
STRUCT_PAGE_SIZE = 64
SECTION_STRUCT_SIZE = 16
SECTIONS_PER_ROOT = PAGE_SIZE // SECTION_STRUCT_SIZE
NR_SECTION_ROOTS = (1 << (MAX_PHYSMEM_BITS - SECTION_SIZE_BITS)) // SECTIONS_PER_ROOT
USAGE_FLAGS_OFFSET = 24  # offsetof(struct mem_section_usage, pageblock_flags)
KHO_PAGE_MAGIC = 0x4B484F50

# include/linux/mmzone.h, CONFIG_CMA=y, CONFIG_MEMORY_ISOLATION=y.
MIGRATE_ENUM = (("MIGRATE_UNMOVABLE", 0), ("MIGRATE_MOVABLE", 1), ("MIGRATE_RECLAIMABLE", 2),
                ("MIGRATE_PCPTYPES", 3), ("MIGRATE_HIGHATOMIC", 3), ("MIGRATE_CMA", 4),
                ("__MIGRATE_TYPE_END", 4), ("MIGRATE_ISOLATE", 5), ("MIGRATE_TYPES", 6))
MIGRATETYPES = {"UNMOVABLE": 0, "MOVABLE": 1, "RECLAIMABLE": 2, "HIGHATOMIC": 3, "CMA": 4}
# include/linux/pageblock-flags.h with CONFIG_MEMORY_ISOLATION=y.
PAGEBLOCK_BITS = (("PB_migrate_0", 0), ("PB_migrate_1", 1), ("PB_migrate_2", 2),
                  ("PB_compact_skip", 3), ("PB_migrate_isolate", 4), ("__NR_PAGEBLOCK_BITS", 5))
NODE_STATES = (("N_POSSIBLE", 0), ("N_ONLINE", 1), ("N_NORMAL_MEMORY", 2), ("N_HIGH_MEMORY", 2),
               ("N_MEMORY", 3), ("N_CPU", 4), ("N_GENERIC_INITIATOR", 5), ("NR_NODE_STATES", 6))
ZONE_STAT = (("NR_FREE_PAGES", 0), ("NR_FREE_PAGES_BLOCKS", 1), ("NR_ZONE_LRU_BASE", 2),
             ("NR_MLOCK", 8), ("NR_FREE_CMA_PAGES", 9), ("NR_VM_ZONE_STAT_ITEMS", 10))
NR_FREE_CMA_PAGES = 9

FLAGS_73 = FlagTable.from_enumerators(GENERATIONS["7.3"].flags, "MEMBLOCK_")
"""Linux 7.3: ``RSRV_HUGETLB = 0x80``, no separate extended-scratch flag."""
FLAGS_V1 = FlagTable.from_enumerators(GENERATIONS["series-v1"].flags, "MEMBLOCK_")
"""The v1 series (next-20260427 base): 0x80 is ``KHO_SCRATCH_EXT``, no RSRV_HUGETLB."""
FLAGS_UNPRESERVED = FlagTable.from_enumerators(GENERATIONS["unpreserved"].flags, "MEMBLOCK_")
"""A kernel with the flag under its later name (value chosen here; only names matter)."""


# --- types ------------------------------------------------------------------


def _enum(prog: Program, tag: str, enumerators: Iterable[Tuple[str, int]]) -> Type:
    return prog.enum_type(tag, prog.int_type("unsigned int", 4, False),
                          [TypeEnumerator(n, v) for n, v in enumerators])


def mm_types(kernel: SynthKernel, scratch_tag: str = "kho_scratch") -> Dict[str, Type]:
    """The mm types ``kho scratch`` and ``kho preserved`` read (7.3 x86_64 offsets
    for ``struct page``, ``struct mem_section`` and its usage; compact ones for
    ``struct zone`` and ``struct pglist_data``, which are read by name)."""
    prog = kernel.prog
    ul = prog.int_type("unsigned long", 8, False)
    int_ = prog.int_type("int", 4, True)
    u64 = prog.int_type("unsigned long long", 8, False)
    void_p = prog.pointer_type(prog.void_type())
    phys_addr_t = kernel.define(prog.typedef_type("phys_addr_t", u64))
    lh = prog.struct_type("list_head", 16, ())
    list_head = kernel.define(prog.struct_type("list_head", 16, (
        TypeMember(prog.pointer_type(lh), "next", 0),
        TypeMember(prog.pointer_type(lh), "prev", 64))))
    atomic_long = prog.typedef_type("atomic_long_t", prog.struct_type(None, 8, (
        TypeMember(prog.int_type("long", 8, True), "counter", 0),)))
    page = prog.struct_type("page", STRUCT_PAGE_SIZE, (
        TypeMember(ul, "flags", 0), TypeMember(list_head, "lru", 64),
        TypeMember(list_head, "buddy_list", 64), TypeMember(void_p, "mapping", 192),
        TypeMember(ul, "__folio_index", 256), TypeMember(ul, "private", 320),
        TypeMember(int_, "_mapcount", 384), TypeMember(int_, "_refcount", 416)))
    free_area = prog.struct_type("free_area", 104, (
        TypeMember(prog.array_type(list_head, 6), "free_list", 0), TypeMember(ul, "nr_free", 768)))
    zone = prog.struct_type("zone", 1264, (
        TypeMember(prog.pointer_type(prog.int_type("char", 1, True)), "name", 0),
        TypeMember(ul, "present_pages", 64), TypeMember(ul, "cma_pages", 128),
        TypeMember(ul, "zone_start_pfn", 192), TypeMember(ul, "spanned_pages", 256),
        TypeMember(prog.array_type(atomic_long, 10), "vm_stat", 320),
        TypeMember(prog.array_type(free_area, MAX_PAGE_ORDER + 1), "free_area", 960)))
    pgdat = prog.struct_type("pglist_data", 4 * 1264 + 32, (
        TypeMember(prog.array_type(zone, 4), "node_zones", 0),
        TypeMember(int_, "nr_zones", 4 * 1264 * 8), TypeMember(int_, "node_id", (4 * 1264 + 4) * 8),
        TypeMember(ul, "node_present_pages", (4 * 1264 + 8) * 8),
        TypeMember(ul, "node_start_pfn", (4 * 1264 + 16) * 8),
        TypeMember(ul, "node_spanned_pages", (4 * 1264 + 24) * 8)))
    usage = prog.struct_type("mem_section_usage", USAGE_FLAGS_OFFSET, (
        TypeMember(prog.struct_type("callback_head", 16, ()), "rcu", 0),
        TypeMember(prog.array_type(ul, 1), "subsection_map", 128),
        TypeMember(prog.array_type(ul, 0), "pageblock_flags", USAGE_FLAGS_OFFSET * 8)))
    section = prog.struct_type("mem_section", SECTION_STRUCT_SIZE, (
        TypeMember(ul, "section_mem_map", 0), TypeMember(prog.pointer_type(usage), "usage", 64)))
    nodemask = prog.typedef_type("nodemask_t", prog.struct_type(None, 8, (
        TypeMember(prog.array_type(ul, 1), "bits", 0),)))

    def res_p() -> Type:  # lazily: the struct points to itself
        return prog.pointer_type(resource)

    resource = prog.struct_type("resource", 64, (
        TypeMember(u64, "start", 0), TypeMember(u64, "end", 64),
        TypeMember(prog.pointer_type(prog.int_type("char", 1, True)), "name", 128),
        TypeMember(ul, "flags", 192), TypeMember(ul, "desc", 256),
        TypeMember(res_p, "parent", 320), TypeMember(res_p, "sibling", 384),
        TypeMember(res_p, "child", 448)))
    scratch = prog.struct_type(scratch_tag, 16, (
        TypeMember(phys_addr_t, "addr", 0), TypeMember(phys_addr_t, "size", 64)))
    types = {
        "page": page, "free_area": free_area, "zone": zone, "pglist_data": pgdat,
        "mem_section_usage": usage, "mem_section": section, "nodemask_t": nodemask,
        "scratch": scratch, "atomic_long_t": atomic_long, "resource": resource,
        "migratetype": _enum(prog, "migratetype", MIGRATE_ENUM),
        "pageblock_bits": _enum(prog, "pageblock_bits", PAGEBLOCK_BITS),
        "node_states": _enum(prog, "node_states", NODE_STATES),
        "zone_stat_item": _enum(prog, "zone_stat_item", ZONE_STAT),
    }
    for t in types.values():
        kernel.define(t)
    types.update(ul=ul, int=int_, list_head=list_head, phys_addr_t=phys_addr_t)
    return types


def _constants(prog: Program, types: Mapping[str, Type]) -> Dict[str, Object]:
    # What drgn takes from vmcoreinfo (SECTION_SIZE_BITS, ...) or from DWARF
    # enumerators; SynthKernel's vmcoreinfo has neither.
    ul = types["ul"]
    out = {name: Object(prog, ul, value) for name, value in (
        ("SECTION_SIZE_BITS", SECTION_SIZE_BITS), ("MAX_PHYSMEM_BITS", MAX_PHYSMEM_BITS),
        ("SECTIONS_PER_ROOT", SECTIONS_PER_ROOT), ("NR_SECTION_ROOTS", NR_SECTION_ROOTS))}
    for key in ("migratetype", "pageblock_bits", "node_states", "zone_stat_item"):
        for e in types[key].enumerators:
            out[e.name] = Object(prog, types[key], e.value)
    return out


# --- memory outside RAM: the struct page array -----------------------------


class _Sparse:
    """A sparse, zero-filled byte store served as one drgn memory segment."""

    def __init__(self) -> None:
        self.pages: Dict[int, bytearray] = {}

    def read(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        return read_sparse(self.pages, offset, count)

    def write(self, offset: int, data: bytes) -> None:
        while data:
            page, off = divmod(offset, PAGE_SIZE)
            n = min(len(data), PAGE_SIZE - off)
            self.pages.setdefault(page, bytearray(PAGE_SIZE))[off:off + n] = data[:n]
            offset, data = offset + n, data[n:]


# --- description and layout -------------------------------------------------


@dataclass
class MmSpec:
    """What to put into the kernel.

    :param nodes: the RAM of each node, ``(start, end)``, node ids 0, 1, ...
    :param scratch: the scratch array, ``(addr, size)`` per area.
    :param scratch_names: the array's and the count's symbol names.
    :param cma_scratch: mark every pageblock of the array ``MIGRATE_CMA``.
    :param migratetypes: more ``(start, end, name)`` pageblock overrides
        (applied after the scratch marking); other pageblocks are MOVABLE.
    :param isolated: ``(start, end)`` ranges whose pageblocks have the isolate bit.
    :param free_cma: free ``(phys, order)`` blocks on the ``MIGRATE_CMA`` lists.
    :param other_cma: bytes of CMA outside scratch per node (``zone->cma_pages``).
    :param holes: ``(start, end)`` ranges whose sections have no usemap.
    :param thp: define ``transparent_hugepage_flags`` (pageblock_order 9 instead of 10).
    """

    nodes: Sequence[Tuple[int, int]]
    scratch: Sequence[Tuple[int, int]] = ()
    scratch_names: Tuple[str, str] = ("kho_scratch", "kho_scratch_cnt")
    cma_scratch: bool = True
    migratetypes: Sequence[Tuple[int, int, str]] = ()
    isolated: Sequence[Tuple[int, int]] = ()
    free_cma: Sequence[Tuple[int, int]] = ()
    other_cma: Mapping[int, int] = field(default_factory=dict)
    holes: Sequence[Tuple[int, int]] = ()
    thp: bool = True


@dataclass
class MmLayout:
    """Where :func:`add_mm` put things, and the struct page store."""

    types: Dict[str, Type]
    vmemmap: _Sparse
    zones: Dict[int, int] = field(default_factory=dict)  # nid -> zone address (virtual)
    variables: Dict[str, int] = field(default_factory=dict)

    def set_private(self, pfn: int, value: int) -> None:
        """Write ``page->private`` of ``pfn``."""
        self.vmemmap.write(pfn * STRUCT_PAGE_SIZE + 40, struct.pack("<Q", value))

    def preserve_heads(self, blocks: Iterable[Tuple[int, int]]) -> None:
        """What ``kho_preserved_memory_reserve()`` does to each ``(phys, order)`` head page."""
        for phys, order in blocks:
            self.set_private(phys >> PAGE_SHIFT, KHO_PAGE_MAGIC << 32 | order)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def add_scratch(kernel: SynthKernel, types: Mapping[str, Type], areas: Sequence[Tuple[int, int]],
                names: Tuple[str, str] = ("kho_scratch", "kho_scratch_cnt")) -> Dict[str, int]:
    """The array (``memblock_alloc``'d, a direct-map pointer) and its count."""
    prog = kernel.prog
    out = {}
    array = 0
    if areas:
        phys = kernel.alloc_phys(16 * len(areas))
        kernel.write_phys(phys, b"".join(_u64(a) + _u64(s) for a, s in areas))
        array = DIRECT_MAP + phys
    out[names[0]] = kernel.add_variable(names[0], prog.pointer_type(types["scratch"]),
                                        _u64(array))
    out[names[1]] = kernel.add_variable(names[1], prog.int_type("unsigned int", 4, False),
                                        struct.pack("<I", len(areas)))
    return out


def _add_nodes(kernel: SynthKernel, types: Mapping[str, Type], spec: MmSpec,
               layout: MmLayout) -> None:
    prog = kernel.prog
    nr = len(spec.nodes)
    mask = (1 << nr) - 1
    states = b"".join(_u64(mask if s in (0, 1, 2, 3) else 0) for s in range(6))
    layout.variables["node_states"] = kernel.add_variable(
        "node_states", prog.array_type(types["nodemask_t"], 6), states)
    kernel.add_variable("nr_node_ids", types["int"], struct.pack("<i", nr))
    pgdat_t, zone_t = types["pglist_data"], types["zone"]
    name = kernel.alloc_phys(8)
    kernel.write_phys(name, b"Normal\0")
    pointers = []
    total = 0
    for nid, (start, end) in enumerate(spec.nodes):
        phys = kernel.alloc_phys(sizeof(pgdat_t))
        zone = phys  # node_zones[0]: one populated zone per node
        pages = (end - start) >> PAGE_SHIFT
        total += pages
        buf = bytearray(sizeof(pgdat_t))
        struct.pack_into("<Q", buf, offsetof(zone_t, "name"), DIRECT_MAP + name)
        struct.pack_into("<QQQ", buf, offsetof(zone_t, "present_pages"), pages, 0,
                         start >> PAGE_SHIFT)
        struct.pack_into("<Q", buf, offsetof(zone_t, "spanned_pages"), pages)
        for head in range((MAX_PAGE_ORDER + 1) * 6):  # zone_init_free_lists()
            off = offsetof(zone_t, "free_area") + (head // 6) * 104 + (head % 6) * 16
            struct.pack_into("<QQ", buf, off, DIRECT_MAP + zone + off, DIRECT_MAP + zone + off)
        struct.pack_into("<iiQQQ", buf, offsetof(pgdat_t, "nr_zones"), 1, nid, pages,
                         start >> PAGE_SHIFT, pages)
        kernel.write_phys(phys, bytes(buf))
        layout.zones[nid] = DIRECT_MAP + zone
        pointers.append(DIRECT_MAP + phys)
    kernel.add_variable("node_data", prog.array_type(prog.pointer_type(pgdat_t), 64),
                        b"".join(map(_u64, pointers)).ljust(64 * 8, b"\0"))
    kernel.add_variable("_totalram_pages", types["atomic_long_t"], _u64(total))


def _add_iomem(kernel: SynthKernel, types: Mapping[str, Type], spec: MmSpec) -> None:
    # /proc/iomem: one top-level "System RAM" resource per node.
    name = kernel.alloc_phys(16)
    kernel.write_phys(name, b"System RAM\0")
    children = [kernel.alloc_phys(64) for _ in spec.nodes]
    root = struct.pack("<QQQQQQQQ", 0, (1 << 64) - 1, 0, 0x200, 0, 0, 0,
                       DIRECT_MAP + children[0] if children else 0)
    parent = kernel.add_variable("iomem_resource", types["resource"], root)
    for i, ((start, end), phys) in enumerate(zip(spec.nodes, children)):
        sibling = DIRECT_MAP + children[i + 1] if i + 1 < len(children) else 0
        kernel.write_phys(phys, struct.pack("<QQQQQQQQ", start, end - 1, DIRECT_MAP + name,
                                            0x81000200, 0, parent, sibling, 0))


def _zone_field(layout: MmLayout, nid: int, member: str) -> int:
    return layout.zones[nid] - DIRECT_MAP + offsetof(layout.types["zone"], member)


def _read_u64(kernel: SynthKernel, phys: int) -> int:
    return struct.unpack("<Q", kernel.prog.read(phys, 8, True))[0]


def _add_u64(kernel: SynthKernel, phys: int, delta: int) -> None:
    kernel.write_phys(phys, _u64(_read_u64(kernel, phys) + delta))


def _node_of(spec: MmSpec, phys: int) -> int:
    return next(n for n, (s, e) in enumerate(spec.nodes) if s <= phys < e)


def _link_free(kernel: SynthKernel, spec: MmSpec, layout: MmLayout) -> None:
    # __free_one_page(): each free block's head page goes on its order's list.
    cma = MIGRATETYPES["CMA"]
    for phys, order in spec.free_cma:
        nid = _node_of(spec, phys)
        area = _zone_field(layout, nid, "free_area") + order * 104
        head = area + cma * 16
        page = VMEMMAP + (phys >> PAGE_SHIFT) * STRUCT_PAGE_SIZE + 8
        first = _read_u64(kernel, head)  # list_add(): page becomes the first entry
        layout.vmemmap.write(page - VMEMMAP, _u64(first) + _u64(DIRECT_MAP + head))
        if first == DIRECT_MAP + head:
            kernel.write_phys(head + 8, _u64(page))
        else:
            layout.vmemmap.write(first - VMEMMAP + 8, _u64(page))
        kernel.write_phys(head, _u64(page))
        _add_u64(kernel, area + 96, 1)  # nr_free
        stat = _zone_field(layout, nid, "vm_stat") + NR_FREE_CMA_PAGES * 8
        _add_u64(kernel, stat, 1 << order)


def _cma_pages(kernel: SynthKernel, spec: MmSpec, layout: MmLayout) -> None:
    per_node: Dict[int, int] = dict(spec.other_cma)
    if spec.cma_scratch:
        for addr, size in spec.scratch:
            per_node[_node_of(spec, addr)] = per_node.get(_node_of(spec, addr), 0) + size
    for nid, size in per_node.items():
        _add_u64(kernel, _zone_field(layout, nid, "cma_pages"), size >> PAGE_SHIFT)


def _pageblock_codes(spec: MmSpec) -> Dict[int, int]:
    # pfn of each pageblock whose flags differ from MIGRATE_MOVABLE -> its flag byte.
    block = 1 << (PAGE_SHIFT + PAGEBLOCK_ORDER)
    codes: Dict[int, int] = {}
    marks = [(a, a + s, "CMA") for a, s in spec.scratch] if spec.cma_scratch else []
    for start, end, name in [*marks, *spec.migratetypes]:
        for b in range(start // block, -(-end // block)):
            codes[b] = MIGRATETYPES[name] | (codes.get(b, 0) & 0x10)
    for start, end in spec.isolated:
        for b in range(start // block, -(-end // block)):
            codes[b] = codes.get(b, MIGRATETYPES["MOVABLE"]) | 0x10
    return codes


def _add_sections(kernel: SynthKernel, types: Mapping[str, Type], spec: MmSpec) -> None:
    prog = kernel.prog
    per_section = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT - PAGEBLOCK_ORDER)
    usemap = per_section * NR_PAGEBLOCK_BITS // 8
    codes = _pageblock_codes(spec)
    holes = RangeSet(Range.from_bounds(s, e) for s, e in spec.holes)
    sections = sorted({nr for s, e in spec.nodes
                       for nr in range(s >> SECTION_SIZE_BITS, -(-e >> SECTION_SIZE_BITS))
                       if (nr << SECTION_SIZE_BITS) not in holes})
    roots_phys = kernel.alloc_phys(NR_SECTION_ROOTS * 8)
    roots: Dict[int, int] = {}
    usages = kernel.alloc_phys(len(sections) * (USAGE_FLAGS_OFFSET + usemap))
    for i, nr in enumerate(sections):
        root = nr // SECTIONS_PER_ROOT
        if root not in roots:
            roots[root] = kernel.alloc_phys(PAGE_SIZE)
            kernel.write_phys(roots_phys + 8 * root, _u64(DIRECT_MAP + roots[root]))
        usage = usages + i * (USAGE_FLAGS_OFFSET + usemap)
        first = nr * per_section
        flags = bytes(codes.get(first + b, MIGRATETYPES["MOVABLE"]) for b in range(per_section))
        kernel.write_phys(usage + USAGE_FLAGS_OFFSET, flags)
        entry = roots[root] + (nr % SECTIONS_PER_ROOT) * SECTION_STRUCT_SIZE
        # SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP; the encoded mem_map is not read.
        kernel.write_phys(entry, _u64(0x3) + _u64(DIRECT_MAP + usage))
    kernel.add_variable("mem_section", prog.pointer_type(prog.pointer_type(types["mem_section"])),
                        _u64(DIRECT_MAP + roots_phys))


def _add_finders(kernel: SynthKernel, types: Mapping[str, Type], store: _Sparse) -> None:
    prog = kernel.prog
    constants = _constants(prog, types)

    def find(prog: Program, name: str, flags: object, filename: Optional[str]) -> Optional[Object]:
        return constants.get(name)

    prog.register_object_finder("synth-mm", find, enable_index=0)
    prog.add_memory_segment(VMEMMAP, 1 << 40, store.read, False)
    page_p = prog.pointer_type(types["page"])
    kernel.add_variable("vmemmap", page_p, _u64(VMEMMAP))
    try:
        prog["page_offset_base"]
    except LookupError:  # drgn's virt_to_phys() reads it on x86_64
        kernel.add_variable("page_offset_base", types["ul"], _u64(DIRECT_MAP))


def add_mm(kernel: SynthKernel, spec: MmSpec) -> MmLayout:
    """Put the mm state described by ``spec`` into ``kernel``."""
    types = mm_types(kernel, scratch_tag=spec.scratch_names[0])
    layout = MmLayout(types, _Sparse())
    _add_finders(kernel, types, layout.vmemmap)
    layout.variables.update(add_scratch(kernel, types, spec.scratch, spec.scratch_names))
    _add_nodes(kernel, types, spec, layout)
    _add_iomem(kernel, types, spec)
    _add_sections(kernel, types, spec)
    _cma_pages(kernel, spec, layout)
    _link_free(kernel, spec, layout)
    if spec.thp:
        kernel.add_variable("transparent_hugepage_flags", types["ul"], _u64(0))
    return layout


# --- memblock and the radix tree --------------------------------------------


def memory_regions(nodes: Sequence[Tuple[int, int]],
                   flagged: Mapping[str, Iterable[Tuple[int, int]]] = ()) -> List[Region]:
    """``memblock.memory`` as the kernel keeps it: split where node or flags
    change, touching regions of equal node and flags merged.

    :param flagged: flag name -> ``(start, end)`` ranges carrying it.
    """
    sets = {name: RangeSet(Range.from_bounds(s, e) for s, e in ranges)
            for name, ranges in dict(flagged).items()}
    cuts = sorted({p for s, e in nodes for p in (s, e)}
                  | {p for rs in sets.values() for r in rs for p in (r.base, r.end)})
    regions: List[Region] = []
    for start, end in zip(cuts, cuts[1:]):
        nid = next((n for n, (s, e) in enumerate(nodes) if s <= start < e), None)
        if nid is None:
            continue
        flags = tuple(name for name, rs in sets.items() if start in rs)
        last = regions[-1] if regions else None
        if last and last.end == start and (last.nid, last.flags) == (nid, flags):
            regions[-1] = Region(last.base, end - last.base, flags, nid)
        else:
            regions.append(Region(start, end - start, flags, nid))
    return regions


def memblock_state(memory: Sequence[Region], reserved: Sequence[Region] = (),
                   flags: FlagTable = FLAGS_73) -> MemblockState:
    """A :class:`MemblockState` of the given regions (no drgn)."""
    return MemblockState(
        types={"memory": MemblockType("memory", tuple(memory), len(memory), 128,
                                      sum(r.size for r in memory)),
               "reserved": MemblockType("reserved", tuple(reserved), len(reserved), 128,
                                        sum(r.size for r in reserved))},
        flags=flags,
    )


def place_radix_tree(kernel: SynthKernel, blocks: Iterable[Tuple[int, int]],
                     node_base: int) -> RadixTreeEncoder:
    """Encode ``(phys, order)`` blocks with the independent encoder and write
    its pages at ``node_base``; pass ``encoder.root`` to ``add_kho(radix_root=)``."""
    encoder = RadixTreeEncoder(node_base=node_base)
    for phys, order in blocks:
        encoder.add(phys, order)
    for phys, page in encoder.pages().items():
        kernel.write_phys(phys, page)
    return encoder


def add_kho_v1(kernel: SynthKernel, first_chunk: int, nested: bool = False) -> None:
    """A kho-v1 ``kho_out`` whose ``preserved_mem_map`` (a direct-map pointer,
    0 before finalize) points at ``first_chunk``; ``nested`` puts it in
    ``kho_out.ser`` as 6.16's ``struct kho_serialization`` did."""
    prog = kernel.prog
    chunk_p = prog.pointer_type(prog.struct_type("khoser_mem_chunk"))
    void_p = prog.pointer_type(prog.void_type())
    bool_ = prog.bool_type("_Bool", 1)
    if nested:
        ser = prog.struct_type("kho_serialization", 48, (
            TypeMember(void_p, "fdt", 0), TypeMember(chunk_p, "preserved_mem_map", 320)))
        kho_out = prog.struct_type("kho_out", 120, (
            TypeMember(prog.struct_type("blocking_notifier_head", 40, ()), "chain_head", 0),
            TypeMember(ser, "ser", 320), TypeMember(bool_, "finalized", 704)))
        offset = 40 + 40
    else:
        kho_out = prog.struct_type("kho_out", 96, (
            TypeMember(void_p, "fdt", 0), TypeMember(bool_, "finalized", 64),
            TypeMember(chunk_p, "preserved_mem_map", 576)))
        offset = 72
    data = bytearray(sizeof(kho_out))
    data[offset:offset + 8] = _u64(DIRECT_MAP + first_chunk if first_chunk else 0)
    kernel.add_type(kho_out)
    kernel.add_variable("kho_out", kho_out, bytes(data))

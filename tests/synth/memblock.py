# SPDX-License-Identifier: LGPL-2.1-or-later
"""memblock in synthetic kernels, one :class:`Generation` per kernel that matters.

:func:`add_memblock` lays out mm/memblock.c's state in a :class:`SynthKernel`
the way a kernel leaves it, and :func:`memblock_kernel` does it on a fresh
kernel::

    prog, layout = memblock_kernel("series-v1", memory=[RawRegion(GB, GB, 0x80, 0)])

What it writes (include/linux/memblock.h, mm/memblock.c; x86_64 layouts as in
the 7.3 DWARF, docs/kernel/memblock.md#struct-layouts):

* the types ``phys_addr_t``, ``enum memblock_flags`` (the generation's
  enumerators), ``struct memblock_region`` (``nid`` only with NUMA),
  ``struct memblock_type``, ``struct memblock`` and ``struct reserve_mem_table``;
* ``struct memblock memblock`` and the static arrays
  ``memblock_memory_init_regions[]``/``memblock_reserved_init_regions[]``
  (``INIT_MEMBLOCK_REGIONS`` entries) in ``.data``, or in the init section for
  a kernel without ARCH_KEEP_MEMBLOCK and MEMORY_HOTPLUG. A type with more
  regions than its static array has *grown*: ``memblock_double_array()``
  doubled ``max`` until they fit and the array lives in RAM (a direct-map
  pointer);
* ``static struct memblock_type *memblock_memory`` (``&memblock.memory``, NULL
  once ``memblock_discard()`` ran);
* ``physmem`` and ``memblock_physmem_init_regions[4]`` with
  CONFIG_HAVE_MEMBLOCK_PHYS_MAP (s390);
* ``reserved_mem_table[8]`` and ``reserved_mem_count`` (``reserve_mem=``);
* ``nr_node_ids`` (NUMA), and ``memblock_discard()`` as a function with code
  when the kernel does not keep memblock (with ARCH_KEEP_MEMBLOCK it is an
  empty inline).

After a discard, grown arrays are freed and reused (filled with slab poison
0x6b); without MEMORY_HOTPLUG, ``free_initmem()`` poisons or unmaps the init
section that holds memblock. The returned :class:`MemblockLayout` records
what was written, so tests compare a reader's output with it.
"""

from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from drgn import Program, Type, TypeEnumerator, TypeMember, offsetof, sizeof
from synth.kernel import DIRECT_MAP, SynthKernel, pack

__all__ = [
    "MEMBLOCK_FLAGS_73",
    "MEMBLOCK_FLAGS_V1",
    "MEMBLOCK_FLAGS_UNPRESERVED",
    "MAX_NUMNODES",
    "NUMA_NO_NODE",
    "INIT_MEMBLOCK_REGIONS",
    "INIT_PHYSMEM_REGIONS",
    "MEMBLOCK_ALLOC_ANYWHERE",
    "Generation",
    "GENERATIONS",
    "RawRegion",
    "MemblockLayout",
    "memblock_types",
    "add_memblock",
    "memblock_kernel",
]

# include/linux/memblock.h, Linux 7.3 (docs/kernel/memblock.md#flags).
MEMBLOCK_FLAGS_73 = (
    ("MEMBLOCK_NONE", 0x0), ("MEMBLOCK_HOTPLUG", 0x1), ("MEMBLOCK_MIRROR", 0x2),
    ("MEMBLOCK_NOMAP", 0x4), ("MEMBLOCK_DRIVER_MANAGED", 0x8), ("MEMBLOCK_RSRV_NOINIT", 0x10),
    ("MEMBLOCK_RSRV_KERN", 0x20), ("MEMBLOCK_KHO_SCRATCH", 0x40),
    ("MEMBLOCK_RSRV_HUGETLB", 0x80),
)
# The v1 series (20260429133928.850721-1-pratyush@kernel.org, next-20260427 base,
# patch 09/12): 0x80 is KHO_SCRATCH_EXT and
# RSRV_HUGETLB does not exist.
MEMBLOCK_FLAGS_V1 = (*MEMBLOCK_FLAGS_73[:-1], ("MEMBLOCK_KHO_SCRATCH_EXT", 0x80))
# The flag under the name KHO_UNPRESERVED, proposed in review of the series; no
# posted kernel has it (docs/kernel/series.md#v2). The lab's patched kernel
# (vm/patches/7.3+unpreserved) gives it the free bit 0x100, as here. Only the
# name matters to kho-inspect.
MEMBLOCK_FLAGS_UNPRESERVED = (*MEMBLOCK_FLAGS_73, ("MEMBLOCK_KHO_UNPRESERVED", 0x100))

MAX_NUMNODES = 64
"""x86_64 ``1 << CONFIG_NODES_SHIFT`` (6): the nid of a region without a node."""
NUMA_NO_NODE = -1
INIT_MEMBLOCK_REGIONS = 128
INIT_PHYSMEM_REGIONS = 4
RESERVE_MEM_MAX_ENTRIES = 8
RESERVE_MEM_NAME_SIZE = 16
MEMBLOCK_ALLOC_ANYWHERE = (1 << 64) - 1
SLAB_POISON = 0x6B
_MEMBLOCK_DISCARD = 0xFFFF_FFFF_8380_1230  # in .init.text


@dataclass(frozen=True)
class Generation:
    """A kernel build that changes what memblock looks like.

    :param keep: ``CONFIG_ARCH_KEEP_MEMBLOCK``: memblock is maintained after boot.
    :param hotplug: ``CONFIG_MEMORY_HOTPLUG``: without ``keep``, memblock and its
        static arrays stay in ``.data`` (frozen) instead of the init section.
    :param memblock_memory: the kernel has ``static struct memblock_type
        *memblock_memory`` (``memblock_discard()`` sets it to NULL).
    :param phys_map: ``CONFIG_HAVE_MEMBLOCK_PHYS_MAP`` (``physmem``; s390).
    """

    name: str
    flags: Tuple[Tuple[str, int], ...] = MEMBLOCK_FLAGS_73
    numa: bool = True
    keep: bool = True
    hotplug: bool = True
    memblock_memory: bool = True
    phys_map: bool = False
    reserve_mem: bool = True
    platform: str = "x86_64"

    def flag(self, *names: str) -> int:
        """The value of flags given by name (``MEMBLOCK_`` prefix optional)."""
        values = dict(self.flags)
        return sum(values[n if n.startswith("MEMBLOCK_") else "MEMBLOCK_" + n] for n in names)


GENERATIONS: Dict[str, Generation] = {g.name: g for g in (
    # The lab kernel: x86_64 with INTEL_TDX_HOST, so ARCH_KEEP_MEMBLOCK.
    Generation("7.3"),
    Generation("series-v1", MEMBLOCK_FLAGS_V1),
    Generation("unpreserved", MEMBLOCK_FLAGS_UNPRESERVED),
    Generation("no-numa", numa=False),
    # Debian x86_64: no ARCH_KEEP_MEMBLOCK, MEMORY_HOTPLUG=y; after boot.
    Generation("discarded", keep=False),
    # No ARCH_KEEP_MEMBLOCK and no MEMORY_HOTPLUG: memblock is __initdata.
    Generation("discarded-init", keep=False, hotplug=False),
    # A kernel from before memblock_memory, without ARCH_KEEP_MEMBLOCK.
    Generation("discarded-old", keep=False, memblock_memory=False),
    # s390x: big endian, physmem (CONFIG_HAVE_MEMBLOCK_PHYS_MAP), keeps memblock.
    Generation("s390", phys_map=True, platform="s390x"),
)}


class RawRegion(NamedTuple):
    """One ``struct memblock_region`` as written: flags as a value, nid as stored."""

    base: int
    size: int
    flags: int = 0
    nid: int = 0


RegionSpec = Union[RawRegion, Tuple[int, ...]]


@dataclass
class MemblockLayout:
    """What :func:`add_memblock` wrote, and where.

    ``regions`` maps each type to the entries of its array (what a reader must
    return, as written); ``arrays`` to the address ``regions`` points at;
    ``init_arrays`` to the static array's address; ``max`` to ``max``.
    """

    generation: Generation
    types: Dict[str, Type]
    memblock: int
    regions: Dict[str, Tuple[RawRegion, ...]] = field(default_factory=dict)
    arrays: Dict[str, int] = field(default_factory=dict)
    init_arrays: Dict[str, int] = field(default_factory=dict)
    max: Dict[str, int] = field(default_factory=dict)
    reserve_mem: Tuple[Tuple[str, int, int], ...] = ()
    variables: Dict[str, int] = field(default_factory=dict)

    def grown(self, name: str) -> bool:
        return self.arrays[name] != self.init_arrays.get(name)


def memblock_types(prog: Program, gen: Generation) -> Dict[str, Type]:
    """The memblock types of ``gen`` (x86_64/s390x offsets).

    See docs/kernel/memblock.md#struct-layouts.
    """
    u64 = prog.int_type("unsigned long long", 8, False)
    ulong = prog.int_type("unsigned long", 8, False)
    int_ = prog.int_type("int", 4, True)
    char = prog.int_type("char", 1, True)
    phys_addr_t = prog.typedef_type("phys_addr_t", u64)
    flags = prog.enum_type("memblock_flags", prog.int_type("unsigned int", 4, False),
                           [TypeEnumerator(n, v) for n, v in gen.flags])
    region_members = [TypeMember(phys_addr_t, "base", 0), TypeMember(phys_addr_t, "size", 64),
                      TypeMember(flags, "flags", 128)]
    if gen.numa:
        region_members.append(TypeMember(int_, "nid", 160))
    # 24 bytes with or without nid: the padding after flags
    # (docs/kernel/memblock.md#struct-layouts).
    region = prog.struct_type("memblock_region", 24, region_members)
    mtype = prog.struct_type("memblock_type", 40, (
        TypeMember(ulong, "cnt", 0), TypeMember(ulong, "max", 64),
        TypeMember(phys_addr_t, "total_size", 128),
        TypeMember(prog.pointer_type(region), "regions", 192),
        TypeMember(prog.pointer_type(char), "name", 256)))
    memblock = prog.struct_type("memblock", 96, (
        TypeMember(prog.bool_type("_Bool", 1), "bottom_up", 0),
        TypeMember(phys_addr_t, "current_limit", 64),
        TypeMember(mtype, "memory", 128), TypeMember(mtype, "reserved", 448)))
    reserve_mem = prog.struct_type("reserve_mem_table", 32, (
        TypeMember(prog.array_type(char, RESERVE_MEM_NAME_SIZE), "name", 0),
        TypeMember(phys_addr_t, "start", 128), TypeMember(phys_addr_t, "size", 192)))
    return {"phys_addr_t": phys_addr_t, "memblock_flags": flags, "memblock_region": region,
            "memblock_type": mtype, "memblock": memblock, "reserve_mem_table": reserve_mem,
            "int": int_, "unsigned int": prog.int_type("unsigned int", 4, False)}


def _region_bytes(kernel: SynthKernel, gen: Generation, t: Type,
                  regions: Sequence[RawRegion], count: int) -> bytes:
    rows = [pack(t, {"base": r.base, "size": r.size, "flags": r.flags,
                     **({"nid": r.nid} if gen.numa else {})}, kernel.byteorder)
            for r in regions]
    return b"".join(rows).ljust(count * sizeof(t), b"\0")


@dataclass
class _Placed:
    # One memblock_type as placed: the values of its struct members.
    header: Dict[str, int]
    array: int
    init_array: int


def _place_type(kernel: SynthKernel, gen: Generation, types: Mapping[str, Type], name: str,
                regions: Sequence[RawRegion], init_symbol: str, init_count: int,
                section: str) -> _Placed:
    t = types["memblock_region"]
    region_array = kernel.prog.array_type(t, init_count)
    fits = len(regions) <= init_count
    init = kernel.add_variable(init_symbol, region_array,
                               _region_bytes(kernel, gen, t, regions if fits else (), init_count),
                               section)
    array, maximum = init, init_count
    if not fits:
        # memblock_double_array(): max doubles until the regions fit; the new
        # array is found in memblock (before slab) and used via the direct map.
        while maximum < len(regions):
            maximum *= 2
        phys = kernel.alloc_phys(maximum * sizeof(t))
        kernel.write_phys(phys, _region_bytes(kernel, gen, t, regions, maximum))
        array = DIRECT_MAP + phys
    label = kernel.add_data(name.encode() + b"\0")
    header = {"cnt": len(regions), "max": maximum, "total_size": sum(r.size for r in regions),
              "regions": array, "name": label}
    return _Placed(header, array, init)


def _as_raw(regions: Iterable[RegionSpec]) -> Tuple[RawRegion, ...]:
    return tuple(r if isinstance(r, RawRegion) else RawRegion(*r) for r in regions)


def _add_reserve_mem(kernel: SynthKernel, types: Mapping[str, Type],
                     entries: Sequence[Tuple[str, int, int]]) -> Dict[str, int]:
    t = types["reserve_mem_table"]
    rows = b"".join(pack(t, {"name": n.encode()[:RESERVE_MEM_NAME_SIZE - 1], "start": s,
                             "size": z}, kernel.byteorder) for n, s, z in entries)
    table = kernel.prog.array_type(t, RESERVE_MEM_MAX_ENTRIES)
    return {
        "reserved_mem_table": kernel.add_variable(
            "reserved_mem_table", table, rows.ljust(sizeof(table), b"\0")),
        "reserved_mem_count": kernel.add_variable(
            "reserved_mem_count", types["int"],
            len(entries).to_bytes(4, kernel.byteorder)),  # type: ignore[arg-type]
    }


def _discard(kernel: SynthKernel, layout: MemblockLayout, free_init: str) -> None:
    # memblock_discard(): grown memory/reserved arrays go back to the page
    # allocator and are reused; memblock_memory = NULL. Then free_initmem().
    types = layout.types
    for name in ("memory", "reserved"):
        if layout.grown(name):
            size = layout.max[name] * sizeof(types["memblock_region"])
            kernel.write_phys(layout.arrays[name] - DIRECT_MAP, bytes([SLAB_POISON]) * size)
    if layout.generation.memblock_memory:
        kernel.write_variable("memblock_memory", bytes(8))
    if not layout.generation.hotplug:
        kernel.free_init(free_init)


def add_memblock(kernel: SynthKernel, generation: Union[str, Generation] = "7.3", *,
                 memory: Iterable[RegionSpec] = (), reserved: Iterable[RegionSpec] = (),
                 physmem: Optional[Iterable[RegionSpec]] = None,
                 reserve_mem: Sequence[Tuple[str, int, int]] = (),
                 bottom_up: bool = False, current_limit: int = MEMBLOCK_ALLOC_ANYWHERE,
                 init_regions: int = INIT_MEMBLOCK_REGIONS, discarded: Optional[bool] = None,
                 free_init: str = "poison", nr_node_ids: Optional[int] = None,
                 overrides: Optional[Mapping[str, int]] = None) -> MemblockLayout:
    """Give ``kernel`` the memblock state of ``generation``.

    :param memory: ``memblock.memory``'s regions (:class:`RawRegion` or tuples),
        written as given: sorting and merging are the caller's business.
    :param physmem: ``physmem``'s regions (generations with ``phys_map``;
        default: memory's ranges without flags or node).
    :param reserve_mem: ``(name, start, size)`` entries of ``reserved_mem_table``.
    :param init_regions: ``INIT_MEMBLOCK_REGIONS``; more regions grow the array.
    :param discarded: ``memblock_discard()`` ran (default: the kernel does not
        keep memblock); grown arrays are then poisoned and ``memblock_memory`` is NULL.
    :param free_init: ``"poison"`` or ``"unmap"``: what freeing the init section
        does (kernels without MEMORY_HOTPLUG, after a discard).
    :param nr_node_ids: default: one more than the highest real nid written.
    :param overrides: dotted ``struct memblock`` members to overwrite last
        (``{"reserved.cnt": 300}``), to corrupt the header.
    """
    gen = GENERATIONS[generation] if isinstance(generation, str) else generation
    types = {k: kernel.define(t) for k, t in memblock_types(kernel.prog, gen).items()}
    section = "data" if gen.keep or gen.hotplug else "init"
    written = {"memory": _as_raw(memory), "reserved": _as_raw(reserved)}
    placed = {name: _place_type(kernel, gen, types, name, written[name],
                                f"memblock_{name}_init_regions", init_regions, section)
              for name in ("memory", "reserved")}
    values: Dict[str, Union[int, bytes]] = {"bottom_up": int(bottom_up),
                                            "current_limit": current_limit}
    for name, p in placed.items():
        values.update({f"{name}.{k}": v for k, v in p.header.items()})
    address = kernel.add_variable("memblock", types["memblock"], pack(
        types["memblock"], {**values, **(overrides or {})}, kernel.byteorder), section)
    layout = MemblockLayout(gen, types, address, regions=written,
                            arrays={n: p.array for n, p in placed.items()},
                            init_arrays={n: p.init_array for n, p in placed.items()},
                            max={n: p.header["max"] for n, p in placed.items()})
    layout.variables["memblock"] = address
    if gen.memblock_memory:
        # &memblock.memory; __refdata, so in .data whatever memblock's section.
        pointer = address + offsetof(types["memblock"], "memory")
        layout.variables["memblock_memory"] = kernel.add_variable(
            "memblock_memory", kernel.prog.pointer_type(types["memblock_type"]),
            pointer.to_bytes(8, kernel.byteorder))  # type: ignore[arg-type]
    if gen.phys_map:
        _add_physmem(kernel, gen, types, layout, physmem, written["memory"])
    if gen.reserve_mem:
        layout.variables.update(_add_reserve_mem(kernel, types, reserve_mem))
        layout.reserve_mem = tuple(reserve_mem)
    if gen.numa and not kernel.has_variable("nr_node_ids"):
        nids = [r.nid for rs in written.values() for r in rs if 0 <= r.nid < MAX_NUMNODES]
        count = nr_node_ids if nr_node_ids is not None else max(nids, default=0) + 1
        layout.variables["nr_node_ids"] = kernel.add_variable(
            "nr_node_ids", types["unsigned int"],
            count.to_bytes(4, kernel.byteorder))  # type: ignore[arg-type]
    if not gen.keep:
        kernel.add_function("memblock_discard", _MEMBLOCK_DISCARD)
        if discarded is None or discarded:
            _discard(kernel, layout, free_init)
    return layout


def _add_physmem(kernel: SynthKernel, gen: Generation, types: Mapping[str, Type],
                 layout: MemblockLayout, physmem: Optional[Iterable[RegionSpec]],
                 memory: Sequence[RawRegion]) -> None:
    # memblock_physmem_add(): memblock_add_range(&physmem, ..., MAX_NUMNODES, 0).
    regions = (_as_raw(physmem) if physmem is not None
               else tuple(r._replace(flags=0, nid=MAX_NUMNODES) for r in memory))
    p = _place_type(kernel, gen, types, "physmem", regions, "memblock_physmem_init_regions",
                    INIT_PHYSMEM_REGIONS, "data")
    layout.variables["physmem"] = kernel.add_variable(
        "physmem", types["memblock_type"],
        pack(types["memblock_type"], p.header, kernel.byteorder))
    layout.regions["physmem"] = regions
    layout.arrays["physmem"] = p.array
    layout.init_arrays["physmem"] = p.init_array
    layout.max["physmem"] = p.header["max"]


def memblock_kernel(generation: Union[str, Generation] = "7.3", *, ram_size: int = 1 << 32,
                    **kwargs: object) -> Tuple[Program, MemblockLayout]:
    """A fresh :class:`SynthKernel` of the generation's platform with
    :func:`add_memblock` applied (``kwargs`` go there)."""
    gen = GENERATIONS[generation] if isinstance(generation, str) else generation
    kernel = SynthKernel(ram_size=ram_size, platform=gen.platform)
    layout = add_memblock(kernel, gen, **kwargs)  # type: ignore[arg-type]
    return kernel.prog, layout

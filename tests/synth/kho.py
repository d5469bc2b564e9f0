# SPDX-License-Identifier: LGPL-2.1-or-later
"""KHO blobs and KHO globals for synthetic kernels (Linux 7.3 layout).

Part 1, pure (drgn not used): byte builders that write each KHO blob the way the
kernel does, with pylibfdt's sequential-write API for what the kernel writes
with ``fdt_create()``/``fdt_property()`` and the read-write API for what
``kho_add_subtree()`` adds later (``fdt_open_into``, ``fdt_add_subnode``,
``fdt_setprop``, ``fdt_pack``). Integers are native endian, as the kernel's
raw ``fdt_property(fdt, name, &val, sizeof(val))`` leaves them.

* :func:`kho_root_fdt` — ``kho_out_fdt_setup()`` + ``kho_add_subtree()``
* :func:`kexec_metadata_blob` — ``struct kho_kexec_metadata``
* :func:`memblock_blob` — ``prepare_kho_fdt()`` in mm/memblock.c
* :func:`luo_blob` — ``struct luo_ser``
* :func:`kho_test_blob`, :func:`kho_vmalloc_desc`, :func:`vmalloc_chunk_pages`
  — lib/test_kho.c and ``kho_preserve_vmalloc()``

Part 2 (drgn):

* :func:`kho_kernel` — ``(prog, layout)``: a fresh synthetic kernel with KHO;
  for example ``kho_kernel(kho_boot=True, kexec_count=2, luo=True,
  out_blobs={"kho_test": kho_test_pages(folios)})``;
* :func:`add_kho` — the same on an existing kernel: types (:func:`kho_types`:
  ``struct kho_out``, ``struct kho_in``, ``struct kho_radix_tree``, ``struct
  kho_debugfs``, LUO's ``luo_global``, ``enum memblock_flags``), the globals
  ``kho_out``, ``kho_in``, ``kho_enable`` and ``luo_global``, and the root FDTs
  and blobs in physical memory. It returns a :class:`KhoLayout` saying where
  everything went. ``radix_root`` is what ``kho_out.radix_tree.root`` points
  at (a radix tree built elsewhere, e.g. by tests/radix_encoder.py, can be
  placed there with ``kernel.write_phys``);
The program builder is :class:`synth.kernel.SynthKernel`; a kernel without
KHO is a bare ``SynthKernel()``. ``enum memblock_flags`` comes from
:mod:`synth.memblock` (7.3's unless the kernel already has a generation's).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import libfdt
from drgn import Program, Type, TypeEnumerator, TypeMember
from synth.kernel import DIRECT_MAP, PAGE_SIZE, SynthKernel, pack
from synth.memblock import MEMBLOCK_FLAGS_73

KHO_TEST_MAGIC = 0x4B484F21


def _u64(value: int, byteorder: str = "little") -> bytes:
    return value.to_bytes(8, byteorder)  # type: ignore[arg-type]


def _u32(value: int, byteorder: str = "little") -> bytes:
    return value.to_bytes(4, byteorder)  # type: ignore[arg-type]


def _finish(sw: libfdt.FdtSw) -> libfdt.Fdt:
    fdt = sw.as_fdt()
    fdt.pack()
    return fdt


def kho_add_subtree(root: bytes, name: str, phys: int, size: Optional[int],
                    byteorder: str = "little", data_prop: str = "preserved-data") -> bytes:
    """What ``kho_add_subtree(name, blob, size)`` does to the root FDT page.

    ``size=None`` omits ``blob-size`` (kho-v1/v2); ``data_prop="fdt"`` is kho-v1.
    """
    fdt = libfdt.Fdt(root)
    fdt.resize(PAGE_SIZE)  # fdt_open_into(root_fdt, root_fdt, PAGE_SIZE)
    off = fdt.add_subnode(0, name)
    fdt.setprop(off, data_prop, _u64(phys, byteorder))
    if size is not None:
        fdt.setprop(off, "blob-size", _u64(size, byteorder))
    fdt.pack()
    return bytes(fdt.as_bytearray())


def kho_root_fdt(mem_map_phys: Optional[int],
                 subtrees: Iterable[Tuple[str, int, Optional[int]]] = (),
                 compatible: str = "kho-v4", byteorder: str = "little",
                 data_prop: str = "preserved-data") -> bytes:
    """The KHO root FDT: ``kho_out_fdt_setup()`` then one ``kho_add_subtree()`` each.

    :param subtrees: ``(name, phys, size)``; ``size`` ``None`` omits blob-size.
    :param mem_map_phys: ``None`` omits ``preserved-memory-map`` (a broken FDT).
    """
    sw = libfdt.FdtSw(PAGE_SIZE)
    sw.finish_reservemap()
    sw.begin_node("")
    sw.property_string("compatible", compatible)
    if mem_map_phys is not None:
        sw.property("preserved-memory-map", _u64(mem_map_phys, byteorder))
    sw.end_node()
    root = bytes(_finish(sw).as_bytearray())
    for name, phys, size in subtrees:
        root = kho_add_subtree(root, name, phys, size, byteorder, data_prop)
    return root


def kexec_metadata_blob(previous_release: str, kexec_count: int, version: int = 1,
                        byteorder: str = "little") -> bytes:
    """``struct kho_kexec_metadata {u32 version; char previous_release[65]; u32 kexec_count;}``
    (packed, 73 bytes), as ``kho_out_kexec_metadata()`` fills it."""
    release = previous_release.encode()[:64].ljust(65, b"\0")
    return _u32(version, byteorder) + release + _u32(kexec_count, byteorder)


def memblock_blob(regions: Sequence[Tuple[str, int, int]], byteorder: str = "little",
                  compatible: str = "memblock-v1") -> bytes:
    """The ``memblock`` FDT of ``prepare_kho_fdt()``: ``(name, start, size)`` per region."""
    sw = libfdt.FdtSw(PAGE_SIZE)
    sw.finish_reservemap()
    sw.begin_node("")
    sw.property_string("compatible", compatible)
    for name, start, size in regions:
        sw.begin_node(name)
        sw.property_string("compatible", "reserve-mem-v1")
        sw.property("start", _u64(start, byteorder))
        sw.property("size", _u64(size, byteorder))
        sw.end_node()
    sw.end_node()
    return bytes(_finish(sw).as_bytearray())


def luo_blob(liveupdate_num: int, sessions_pa: int, flbs_pa: int,
             compatible: str = "luo-v5", byteorder: str = "little") -> bytes:
    """``struct luo_ser {char compatible[8]; u64 liveupdate_num, sessions_pa, flbs_pa;}``."""
    return (compatible.encode()[:7].ljust(8, b"\0") + _u64(liveupdate_num, byteorder)
            + _u64(sessions_pa, byteorder) + _u64(flbs_pa, byteorder))


def kho_vmalloc_desc(first: int, total_pages: int, flags: int = 0x1, order: int = 0,
                     byteorder: str = "little") -> bytes:
    """``struct kho_vmalloc {u64 first; unsigned int total_pages; u16 flags; u16 order;}``."""
    return (_u64(first, byteorder) + _u32(total_pages, byteorder)
            + flags.to_bytes(2, byteorder) + order.to_bytes(2, byteorder))  # type: ignore


def vmalloc_chunk_pages(blocks: Sequence[int], chunk_phys: Sequence[int],
                        byteorder: str = "little") -> Dict[int, bytes]:
    """The chunk pages ``kho_preserve_vmalloc()`` writes for ``blocks``.

    A chunk is ``{u64 next; u64 phys[511];}``; a new chunk is started as soon
    as one is full, so ``len(blocks) // 511 + 1`` chunk addresses are used.

    :return: ``{chunk phys: page bytes}``.
    """
    per = PAGE_SIZE // 8 - 1
    need = len(blocks) // per + 1
    if len(chunk_phys) < need:
        raise ValueError(f"{len(blocks)} blocks need {need} chunks")
    pages = {}
    for i in range(need):
        entries = list(blocks[i * per:(i + 1) * per])
        nxt = chunk_phys[i + 1] if i + 1 < need else 0
        words = [nxt] + entries + [0] * (per - len(entries))
        pages[chunk_phys[i]] = b"".join(_u64(w, byteorder) for w in words)
    return pages


def kho_test_blob(nr_folios: int, folios_info: bytes, csum: int,
                  magic: int = KHO_TEST_MAGIC, byteorder: str = "little") -> bytes:
    """lib/test_kho.c ``kho_test_prepare_fdt()``: ``kho-test-v1`` with ``/data``."""
    sw = libfdt.FdtSw(PAGE_SIZE)
    sw.finish_reservemap()
    sw.begin_node("")
    sw.property("compatible", b"kho-test-v1\0")  # sizeof(compatible) includes the NUL
    sw.property("magic", _u32(magic, byteorder))
    sw.begin_node("data")
    sw.property("nr_folios", _u32(nr_folios, byteorder))
    sw.property("folios_info", folios_info)
    sw.property("csum", _u32(csum, byteorder))
    sw.end_node()
    sw.end_node()
    return bytes(_finish(sw).as_bytearray())


def folio_list_pages(folios: Sequence[Tuple[int, int]], data_phys: Sequence[int],
                     chunk_phys: Sequence[int],
                     byteorder: str = "little") -> Tuple[bytes, Dict[int, bytes]]:
    """test_kho's ``folios_info`` vmalloc array of ``phys | order`` entries.

    :param data_phys: one page address per vmalloc page of the array (order 0).
    :return: the ``struct kho_vmalloc`` bytes and every page to place in memory
        (the array's pages and the chunk pages).
    """
    array = b"".join(_u64(phys | order, byteorder) for phys, order in folios)
    npages = max(1, -(-len(array) // PAGE_SIZE))
    if len(data_phys) < npages:
        raise ValueError(f"{len(folios)} folios need {npages} array pages")
    pages: Dict[int, bytes] = {}
    for i in range(npages):
        pages[data_phys[i]] = array[i * PAGE_SIZE:(i + 1) * PAGE_SIZE].ljust(PAGE_SIZE, b"\0")
    pages.update(vmalloc_chunk_pages(list(data_phys[:npages]), chunk_phys, byteorder))
    return kho_vmalloc_desc(chunk_phys[0], npages, byteorder=byteorder), pages


def page_reader(pages: Dict[int, bytes]):
    """A ``read_page(phys)`` over a dict of pages; unknown pages raise ``LookupError``."""

    def read_page(phys: int) -> bytes:
        try:
            return pages[phys]
        except KeyError:
            raise LookupError(f"no page at {phys:#x}") from None

    return read_page


# --- Part 2: KHO globals in a synthetic drgn program ------------------------


def kho_types(prog: Program, metadata_members: bool = True) -> Dict[str, Type]:
    """Linux 7.3's KHO types (x86_64 offsets as in the 7.3 DWARF).

    ``metadata_members=False`` gives the ``struct kho_in`` of kernels from
    before kexec-metadata (no ``previous_release``/``kexec_count``).

    ``struct kho_out`` (96 B), ``struct kho_in`` (152 B), ``struct
    kho_radix_tree``, ``struct kho_radix_node``, ``struct kho_debugfs``
    (CONFIG_KEXEC_HANDOVER_DEBUGFS=y), ``struct mutex`` (opaque, 24 B), LUO's
    anonymous ``luo_global`` struct, ``struct luo_ser`` and ``enum
    memblock_flags``.
    """
    u64 = prog.int_type("unsigned long long", 8, False)
    u32 = prog.int_type("unsigned int", 4, False)
    char = prog.int_type("char", 1, True)
    phys_addr_t = prog.typedef_type("phys_addr_t", u64)
    void_p = prog.pointer_type(prog.void_type())
    mutex = prog.struct_type("mutex", 24, ())
    list_head = prog.struct_type("list_head", 16, ())
    list_head = prog.struct_type("list_head", 16, (
        TypeMember(prog.pointer_type(list_head), "next", 0),
        TypeMember(prog.pointer_type(list_head), "prev", 64)))
    dentry_p = prog.pointer_type(prog.struct_type("dentry"))
    node = prog.struct_type("kho_radix_node", PAGE_SIZE, (
        TypeMember(prog.array_type(u64, PAGE_SIZE // 8), "table", 0),))
    tree = prog.struct_type("kho_radix_tree", 32, (
        TypeMember(prog.pointer_type(node), "root", 0), TypeMember(mutex, "lock", 64)))
    dbg = prog.struct_type("kho_debugfs", 32, (
        TypeMember(dentry_p, "dir", 0), TypeMember(dentry_p, "sub_fdt_dir", 64),
        TypeMember(list_head, "fdt_list", 128)))
    kho_out = prog.struct_type("kho_out", 96, (
        TypeMember(void_p, "fdt", 0), TypeMember(mutex, "lock", 64),
        TypeMember(tree, "radix_tree", 256), TypeMember(dbg, "dbg", 512)))
    if metadata_members:
        kho_in = prog.struct_type("kho_in", 152, (
            TypeMember(phys_addr_t, "fdt_phys", 0), TypeMember(phys_addr_t, "scratch_phys", 64),
            TypeMember(prog.array_type(char, 65), "previous_release", 128),
            TypeMember(u32, "kexec_count", 84 * 8), TypeMember(dbg, "dbg", 88 * 8),
            TypeMember(tree, "radix_tree", 120 * 8)))
    else:
        kho_in = prog.struct_type("kho_in", 80, (
            TypeMember(phys_addr_t, "fdt_phys", 0), TypeMember(phys_addr_t, "scratch_phys", 64),
            TypeMember(dbg, "dbg", 128), TypeMember(tree, "radix_tree", 384)))
    luo_ser = prog.struct_type("luo_ser", 32, (
        TypeMember(prog.array_type(char, 8), "compatible", 0),
        TypeMember(u64, "liveupdate_num", 64), TypeMember(u64, "sessions_pa", 128),
        TypeMember(u64, "flbs_pa", 192)))
    luo_global = prog.struct_type(None, 24, (
        TypeMember(prog.bool_type("_Bool", 1), "enabled", 0),
        TypeMember(prog.pointer_type(luo_ser), "luo_ser_out", 64),
        TypeMember(u64, "liveupdate_num", 128)))
    flags = prog.enum_type("memblock_flags", u32,
                           [TypeEnumerator(n, v) for n, v in MEMBLOCK_FLAGS_73])
    return {"kho_out": kho_out, "kho_in": kho_in, "kho_radix_tree": tree,
            "kho_radix_node": node, "kho_debugfs": dbg, "mutex": mutex, "luo_ser": luo_ser,
            "luo_global": luo_global, "memblock_flags": flags, "phys_addr_t": phys_addr_t,
            "bool": prog.bool_type("_Bool", 1)}


@dataclass
class KhoLayout:
    """Where :func:`add_kho` put things (physical addresses unless named ``*_virt``)."""

    types: Dict[str, Type]
    out_fdt: Optional[int] = None
    in_fdt: Optional[int] = None
    out_blobs: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    in_blobs: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    variables: Dict[str, int] = field(default_factory=dict)


Blob = Union[bytes, Callable[[SynthKernel], bytes]]
"""A blob, or a function that builds it (and places its own pages) on the kernel."""


def _place_root(kernel: SynthKernel, blobs: Mapping[str, Blob], mem_map: Optional[int],
                compatible: str) -> Tuple[int, Dict[str, Tuple[int, int]]]:
    placed = {}
    for name, blob in blobs.items():
        data = blob(kernel) if callable(blob) else blob
        phys = kernel.alloc_phys(len(data))
        kernel.write_phys(phys, data)
        placed[name] = (phys, len(data))
    root = kho_root_fdt(mem_map, [(n, p, s) for n, (p, s) in placed.items()], compatible)
    fdt = kernel.alloc_phys(PAGE_SIZE)
    kernel.write_phys(fdt, root)
    return fdt, placed


def kho_test_pages(folios: Sequence[Tuple[int, int]], csum: int = 0x1234) -> Callable[
        [SynthKernel], bytes]:
    """A ``kho_test`` blob builder: places the folio list and its chunk pages."""

    def build(kernel: SynthKernel) -> bytes:
        npages = max(1, -(-len(folios) * 8 // PAGE_SIZE))
        data = [kernel.alloc_phys(PAGE_SIZE) for _ in range(npages)]
        chunks = [kernel.alloc_phys(PAGE_SIZE) for _ in range(npages // 511 + 1)]
        desc, pages = folio_list_pages(folios, data, chunks)
        for phys, page in pages.items():
            kernel.write_phys(phys, page)
        return kho_test_blob(len(folios), desc, csum)

    return build


def add_kho(kernel: SynthKernel, *, enabled: bool = True, kho_boot: bool = False,
            kexec_count: int = 1, previous_release: str = "7.3.3", release: str = "7.3.4",
            radix_root: int = 0x7F0_0000, in_radix_root: int = 0x7E0_0000,
            scratch_phys: int = 0x7D0_0000, luo: Optional[bool] = False,
            liveupdate_num: int = 0, out_blobs: Optional[Mapping[str, Blob]] = None,
            in_blobs: Optional[Mapping[str, Blob]] = None, compatible: str = "kho-v4",
            compatible_in: Optional[str] = None, metadata: bool = True,
            metadata_members: bool = True) -> KhoLayout:
    """Give ``kernel`` Linux 7.3's KHO globals and FDTs.

    :param enabled: ``kho_enable``; when false ``kho_out.fdt`` stays NULL (no FDT).
    :param kho_boot: booted through KHO: ``kho_in`` points at an incoming root FDT.
    :param kexec_count: on a KHO boot, this kernel's kexec number (``kho_in.kexec_count``
        and the incoming kexec-metadata); the outgoing metadata gets one more.
    :param radix_root: ``kho_out.radix_tree.root`` (a direct-map pointer to this
        physical page) and the outgoing ``preserved-memory-map``.
    :param in_radix_root: the incoming ``preserved-memory-map``.
    :param luo: ``luo_global.enabled``; ``None`` leaves LUO out (CONFIG_LIVEUPDATE=n).
        When true, a ``LUO`` blob with ``liveupdate_num + 1`` goes into the outgoing FDT.
    :param out_blobs: more outgoing sub-blobs, ``name -> bytes or builder``.
    :param in_blobs: more incoming sub-blobs (the incoming FDT also gets the
        previous kernel's kexec-metadata unless ``metadata`` is false).
    :param metadata_members: ``struct kho_in`` has ``previous_release`` and
        ``kexec_count`` (7.3); false gives an older ``struct kho_in``.
    """
    types = kho_types(kernel.prog, metadata_members)
    for t in types.values():
        kernel.define(t)  # the bench may already define enum memblock_flags or phys_addr_t
    layout = KhoLayout(types)
    out_values: Dict[str, Union[int, bytes]] = {"radix_tree.root": DIRECT_MAP + radix_root}
    in_values: Dict[str, Union[int, bytes]] = {}
    count = kexec_count if kho_boot else 0
    if kho_boot:
        blobs: Dict[str, Blob] = {}
        if metadata:
            blobs["kexec-metadata"] = kexec_metadata_blob(previous_release, count)
        blobs.update(in_blobs or {})
        layout.in_fdt, layout.in_blobs = _place_root(kernel, blobs, in_radix_root,
                                                     compatible_in or compatible)
        in_values = {"fdt_phys": layout.in_fdt, "scratch_phys": scratch_phys,
                     "radix_tree.root": DIRECT_MAP + in_radix_root}
        if metadata and metadata_members:
            in_values.update(kexec_count=count,
                             previous_release=previous_release.encode()[:64])
    if enabled:
        blobs = {"kexec-metadata": kexec_metadata_blob(release, count + 1)}
        if luo:
            blobs["LUO"] = luo_blob(liveupdate_num + 1, 0, 0)
        blobs.update(out_blobs or {})
        layout.out_fdt, layout.out_blobs = _place_root(kernel, blobs, radix_root, compatible)
        out_values["fdt"] = DIRECT_MAP + layout.out_fdt
    for name, t, values in (("kho_out", types["kho_out"], out_values),
                            ("kho_in", types["kho_in"], in_values)):
        layout.variables[name] = kernel.add_variable(name, t, pack(t, values))
    layout.variables["kho_enable"] = kernel.add_variable(
        "kho_enable", types["bool"], bytes([enabled]))
    if luo is not None:
        t = types["luo_global"]
        layout.variables["luo_global"] = kernel.add_variable("luo_global", t, pack(
            t, {"enabled": int(luo), "liveupdate_num": liveupdate_num}))
    return layout


def kho_kernel(**kwargs: Any) -> Tuple[Program, KhoLayout]:
    """A fresh :class:`SynthKernel` with :func:`add_kho` applied (``kwargs`` go there)."""
    kernel = SynthKernel()
    layout = add_kho(kernel, **kwargs)
    return kernel.prog, layout


__all__ = [
    "PAGE_SIZE",
    "kho_add_subtree",
    "kho_root_fdt",
    "kexec_metadata_blob",
    "memblock_blob",
    "luo_blob",
    "kho_vmalloc_desc",
    "vmalloc_chunk_pages",
    "kho_test_blob",
    "folio_list_pages",
    "page_reader",
    "kho_types",
    "KhoLayout",
    "kho_test_pages",
    "add_kho",
    "kho_kernel",
]

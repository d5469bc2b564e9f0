# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Preserved memory
----------------

The ``kho_inspect.preserved`` module says which physical memory a kernel
preserves across a Kexec HandOver, from one of these sources:

* ``out``: the outgoing radix tree ``kho_out.radix_tree`` of the running
  kernel, walked with :func:`kho_inspect.radix.walk_radix_tree`. This is what
  the kernel hands to the next one if it kexecs now. kho-v1 kernels have no
  tree (v6.16 to v7.0); their chunk list (``kho_out.preserved_mem_map``,
  built at finalize, which Linux kernel commit 6b0dd42d7681 ("kho: remove
  finalize state and clients") (in v7.1) removed)
  is decoded with :func:`kho_inspect.radix.decode_khoser_chunks`.
* ``reserved``: in the kernel after a KHO boot, the ``memblock.reserved``
  regions flagged ``RSRV_NOINIT`` and not ``RSRV_HUGETLB``:
  ``kho_preserved_memory_reserve()`` reserves every preserved block and marks
  it noinit. Neighbouring reservations merge, so orders are unknown.
* ``pages``: in the kernel after a KHO boot, the head pages whose
  ``page->private`` still holds ``KHO_PAGE_MAGIC`` and the order (a block not
  restored yet; ``kho_restore_page()`` clears it). Only the struct pages
  inside the ``reserved`` regions are read, in bulk.
* ``snapshot``: the JSON that ``kho-inspect kho preserved --json`` printed in
  the previous kernel; its own output is the snapshot format.

The incoming tree (``kho_in.radix_tree``) is deliberately not a source: its
pages are never reserved, go back to the page allocator at
``memblock_free_all()`` and are reused, so after boot the root dangles
(docs/kernel/kho.md#incoming-tree). :func:`refuse_incoming` explains that.
"""

import json
from dataclasses import replace
from struct import pack, unpack_from
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import drgn
from drgn import Program, offsetof, sizeof

from kho_inspect.errors import (
    CorruptTreeError,
    IncomingTreeError,
    InputError,
    KhoInspectError,
    NotKhoKernelError,
    StaleMemblockError,
)
from kho_inspect.fdt import decode_kho_root
from kho_inspect.kho import is_kho_boot, kho_enabled, kho_in, kho_out
from kho_inspect.kho_fdt import read_root_fdt
from kho_inspect.memblock import read_memblock
from kho_inspect.model.memblock import MemblockState, Region
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.snapshot import SNAPSHOT_SCHEMA, load_snapshot_document
from kho_inspect.radix import (
    PreservedMemory,
    coalesce_ranges,
    decode_khoser_chunks,
    walk_radix_tree,
)
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.target import byteorder, direct_map_phys, kernel_release, page0

__all__ = (
    "KHO_PAGE_MAGIC",
    "SOURCES",
    "find_magic_heads",
    "load_snapshot",
    "read_outgoing",
    "read_outgoing_v1",
    "read_pages",
    "read_preserved",
    "read_reserved",
    "refuse_incoming",
    "reserved_regions",
)

SOURCES = ("out", "in", "reserved", "pages", "snapshot")

# kernel/liveupdate/kexec_handover.c:54, a macro (not in DWARF):
# #define KHO_PAGE_MAGIC 0x4b484f50U /* ASCII for 'KHOP' */
KHO_PAGE_MAGIC = 0x4B484F50
"""The magic that ``kho_preserved_memory_reserve()`` stores in a head page."""

_SCAN_PAGES = 1 << 15  # struct pages read per chunk (2 MiB of struct page)


def _from_walk(source: str, pm: PreservedMemory, **kwargs: Any) -> PreservedReport:
    return PreservedReport(
        source=source,
        ranges=tuple(pm.ranges),
        tree_pages=tuple(pm.tree_pages),
        histogram=dict(pm.histogram),
        keys=pm.keys,
        page_shift=pm.page_shift,
        **kwargs,
    )


# --- pure -------------------------------------------------------------------


def reserved_regions(state: MemblockState) -> Tuple[List[Region], List[str]]:
    """The ``memblock.reserved`` regions that hold KHO-preserved memory.

    Those flagged ``RSRV_NOINIT`` and not ``RSRV_HUGETLB``: only KHO
    (``kho_preserved_memory_reserve()``) and hugetlb boot pages mark reserved
    memory noinit, and 7.3 tells hugetlb apart with ``RSRV_HUGETLB``.

    :return: the regions and notes on what the flags cannot tell.
    :raises NotKhoKernelError: the kernel has no ``RSRV_NOINIT`` flag.
    """
    flags = state.flags
    if not flags.has("RSRV_NOINIT"):
        raise NotKhoKernelError(
            "This kernel's enum memblock_flags has no MEMBLOCK_RSRV_NOINIT, so preserved "
            "memory cannot be told apart in memblock.reserved",
            given="source", name="reserved", alternatives=("pages", "snapshot"),
        )
    notes = []
    if not flags.has("RSRV_HUGETLB"):
        notes.append("This kernel has no MEMBLOCK_RSRV_HUGETLB flag: noinit reservations of "
                     "boot-time huge pages cannot be told apart and are included.")
    if state.stale:
        notes.append(f"memblock is stale ({state.stale_reason}).")
    regions = [r for r in state.reserved.regions
               if r.has_flag("RSRV_NOINIT") and not r.has_flag("RSRV_HUGETLB")]
    return regions, notes


def find_magic_heads(
    data: bytes,
    first_pfn: int,
    *,
    struct_size: int,
    private_offset: int,
    byteorder: str = "little",
) -> List[Tuple[int, int]]:
    """``(pfn, order)`` of each struct page in ``data`` that carries the KHO magic.

    ``page->private`` is ``union kho_page_info { unsigned long page_private;
    struct { unsigned int order; unsigned int magic; }; }``, so the magic is
    the ``unsigned int`` at byte 4 of ``private`` on either byte order. The
    magic is searched for with ``bytes.find``, so the cost grows with the
    matches, not with the pages.

    :param data: consecutive ``struct page``, the first one of ``first_pfn``.
    :param struct_size: ``sizeof(struct page)``.
    :param private_offset: ``offsetof(struct page, private)``.
    """
    fmt = "<I" if byteorder == "little" else ">I"
    magic = pack(fmt, KHO_PAGE_MAGIC)
    at = private_offset + 4
    found = []
    pos = data.find(magic, at)
    while pos >= 0:
        index, rem = divmod(pos - at, struct_size)
        if not rem:
            found.append((first_pfn + index, unpack_from(fmt, data, pos - 4)[0]))
        pos = data.find(magic, pos + 1)
    return found


def heads_to_report(heads: Iterable[Tuple[int, int]], page_shift: int,
                    **kwargs: Any) -> PreservedReport:
    """Turn ``(pfn, order)`` head pages into a ``pages`` report.

    Heads that cannot be preserved blocks (an order too large for a radix key,
    a pfn not aligned to its order) are left out and counted in a note.
    """
    max_order = 64 - page_shift
    triples, histogram, bad = [], {}, 0
    for pfn, order in heads:
        if order > max_order or pfn & ((1 << min(order, 63)) - 1):
            bad += 1
            continue
        triples.append((pfn << page_shift, 1 << (page_shift + order), order))
        histogram[order] = histogram.get(order, 0) + 1
    notes = list(kwargs.pop("notes", ()))
    if bad:
        notes.append(f"{bad} page(s) carry the magic with an impossible order or alignment "
                     "and were left out.")
    return PreservedReport(
        source="pages",
        ranges=tuple(coalesce_ranges(triples)),
        histogram=dict(sorted(histogram.items(), reverse=True)),
        page_shift=page_shift,
        notes=tuple(notes),
        **kwargs,
    )


def _from_snapshot_document(obj: Dict[str, Any], path: str) -> PreservedReport:
    # A `kho-inspect snapshot` document: its outgoing preserved memory.
    snap = load_snapshot_document(obj, f"the snapshot {path}")
    report = snap.preserved_out
    if report is None:
        raise InputError(f"The snapshot {path} holds no outgoing preserved memory: "
                         f"{snap.why_missing('preserved_out')}", path=path)
    origin = {"file": path, "source": report.source, "kernel": snap.release}
    return replace(report, source="snapshot", origin=origin)


def load_snapshot(path: str) -> PreservedReport:
    """Load a snapshot saved with ``kho-inspect kho preserved --json`` or
    ``kho-inspect snapshot`` (its ``preserved_out`` section).

    :raises InputError: the file is unreadable or not such a snapshot.
    """
    try:
        with open(path) as f:
            obj = json.load(f)
    except OSError as e:
        raise InputError(f"Cannot read snapshot {path}: {e.strerror}.", path=path) from e
    except ValueError as e:
        raise InputError(f"Snapshot {path} is not JSON ({e})",
                         "save one with `kho-inspect kho preserved --json > FILE` in the "
                         "previous kernel", path=path) from e
    if isinstance(obj, dict) and obj.get("schema") == SNAPSHOT_SCHEMA:
        return _from_snapshot_document(obj, path)
    try:
        origin = {"file": path, "source": obj["source"], "kernel": obj.get("kernel")}
        return replace(PreservedReport.from_json(obj, origin=origin), source="snapshot")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{path} is not a snapshot of `kho-inspect kho preserved --json` "
                         f"(bad or missing {e}).", path=path) from e


# --- drgn -------------------------------------------------------------------


def _resources(root: drgn.Object) -> Iterator[drgn.Object]:
    # drgn's for_each_resource(): root, then each child's subtree in order.
    yield root
    child = root.child.read_()
    while child:
        yield from _resources(child)
        child = child.sibling.read_()


def _iomem_ram(prog: Program) -> Optional[RangeSet]:
    # The "System RAM" children of iomem_resource (/proc/iomem's top level).
    try:
        root = prog["iomem_resource"].address_of_()
        ranges = [
            Range.from_bounds(res.start.value_(), res.end.value_() + 1)
            for res in _resources(root)
            if res.parent.value_() == root.value_() and res.name.string_() == b"System RAM"
        ]
    except (LookupError, AttributeError, drgn.FaultError):
        return None
    return RangeSet(ranges) if ranges else None


def ram_ranges(prog: Program) -> Optional[RangeSet]:
    """Where tree pages may live: ``memblock.memory``, else iomem System RAM.

    :return: ``None`` when neither is readable (pointers are then not checked).
    """
    try:
        state = read_memblock(prog)
        if state.memory.regions:
            return state.memory.ranges()
    except KhoInspectError:
        pass
    return _iomem_ram(prog)


def _phys_of(prog: Program, virt: int, what: str) -> int:
    # A direct-map address (get_zeroed_page(), kmalloc()). drgn finds the
    # direct map from page_offset_base on x86_64; where it cannot (a dump
    # without that variable), the outgoing FDT's preserved-memory-map holds
    # the same physical address (kho_out_fdt_setup(), kho_finalize()).
    try:
        return direct_map_phys(prog, virt)
    except Exception:  # drgn raises a bare Exception when it has no direct map
        pass
    _, _, data = read_root_fdt(prog, "out")
    phys = decode_kho_root(data, byteorder(prog)).mem_map_phys
    if phys is None:
        raise CorruptTreeError(
            f"The outgoing KHO FDT has no preserved-memory-map and drgn cannot translate {what} "
            f"({virt:#x}) to a physical address."
        )
    return phys


def _walk_args(prog: Program) -> Dict[str, Any]:
    page_size = 1 << prog["PAGE_SHIFT"].value_()
    return {
        "read_page": lambda p: prog.read(p, page_size, True),
        "ram": ram_ranges(prog),
        "page_shift": prog["PAGE_SHIFT"].value_(),
        "byteorder": byteorder(prog),
    }


def _out_report(prog: Program, pm: PreservedMemory, root: int, ram: Optional[RangeSet],
                notes: Sequence[str] = ()) -> PreservedReport:
    if ram is None:
        notes = [*notes, "No RAM map (memblock or iomem) was readable, so tree pointers were "
                         "not checked against RAM."]
    return _from_walk("out", pm, root=root, kernel=kernel_release(prog), notes=tuple(notes))


def read_outgoing(prog: Program, keys: bool = False) -> PreservedReport:
    """Walk ``kho_out.radix_tree`` (``struct kho_radix_node *`` root, virtual).

    On kho-v1 kernels, which have no radix tree, the serialized chunk list
    (``kho_out.preserved_mem_map``) is decoded instead; see :func:`read_outgoing_v1`.

    :param keys: also return the raw keys (radix tree only).
    :raises NotKhoKernelError: no ``kho_out``, or KHO is off.
    :raises CorruptTreeError: the tree is malformed (the message has the path).
    """
    kout = kho_out(prog)
    if kho_enabled(prog) is False:
        # kho_fill_kimage() hands nothing over then (kexec_handover.c:2049).
        raise NotKhoKernelError("KHO is off on this kernel (kho_enable is false), so it hands "
                                "nothing over",
                                "KHO is not active (not requested, or it disabled itself: see "
                                "the kernel log)")
    try:
        root = kout.radix_tree.root
    except AttributeError:
        return read_outgoing_v1(prog, kout)
    if not root.value_():
        raise NotKhoKernelError("kho_out.radix_tree.root is NULL",
                                "KHO is not active on this kernel (not requested, or it "
                                "disabled itself: see the kernel log)")
    root_phys = _phys_of(prog, root.value_(), "kho_out.radix_tree.root")
    args = _walk_args(prog)
    pm = walk_radix_tree(args.pop("read_page"), root_phys, keys=keys, **args)
    return _out_report(prog, pm, root_phys, args["ram"])


def _v1_first_chunk(kout: drgn.Object) -> Optional[drgn.Object]:
    # struct khoser_mem_chunk *preserved_mem_map: a member of kho_out in
    # kho-v1 kernels, nested in kho_out.ser (struct kho_serialization) since
    # Linux kernel commit 3dc92c311498 ("kexec: add Kexec HandOver (KHO)
    # generation helpers") (in v6.16).
    for path in (("preserved_mem_map",), ("ser", "preserved_mem_map")):
        obj = kout
        try:
            for name in path:
                obj = obj.member_(name)
        except LookupError:
            continue
        return obj
    return None


def read_outgoing_v1(prog: Program, kout: Optional[drgn.Object] = None) -> PreservedReport:
    """Decode a kho-v1 kernel's serialized preserved memory (v6.16 until the radix tree
    of Linux kernel commit 3f2ad90060f6, in v7.1).

    ``kho_mem_serialize()`` builds the ``struct khoser_mem_chunk`` list only
    at finalize; before that, preservations live in xarrays that are not read.

    :raises NotKhoKernelError: not finalized, or an unknown ``kho_out`` layout.
    """
    first = _v1_first_chunk(kout if kout is not None else kho_out(prog))
    if first is None:
        raise NotKhoKernelError(
            "kho_out has neither radix_tree nor preserved_mem_map: this kernel's KHO layout is "
            "one kho-inspect does not know."
        )
    if not first.value_():
        raise NotKhoKernelError(
            "This kho-v1 kernel has not serialized its preserved memory yet: finalize KHO "
            "(echo 1 > /sys/kernel/debug/kho/out/finalize) and run again."
        )
    phys = _phys_of(prog, first.value_(), "kho_out.preserved_mem_map")
    args = _walk_args(prog)
    pm = decode_khoser_chunks(args.pop("read_page"), phys, **args)
    return _out_report(prog, pm, phys, args["ram"],
                       ["kho-v1 chunk list (khoser_mem_chunk); tree pages are its chunk pages."])


def refuse_incoming(prog: Optional[Program] = None) -> None:
    """Explain why the incoming tree is no source, and name the valid ones.

    :raises IncomingTreeError: always.
    """
    if prog is not None and _cold_boot(prog):
        raise IncomingTreeError(
            "This kernel was not booted through KHO (kho_in.fdt_phys is 0), so there is no "
            "incoming tree",
            "{alternatives} shows what this kernel will hand over",
            given="source", name="in", alternatives=("out",),
        )
    raise IncomingTreeError(
        "The incoming radix tree (kho_in.radix_tree) cannot be walked after boot: "
        "kho_mem_retrieve() reserves only the memory it describes, so its own pages went back "
        "to the page allocator at memblock_free_all() and may be reused",
        "use {alternatives} (the noinit memblock reservations, the head pages still carrying "
        "the KHO magic, or a report saved in the previous kernel)",
        given="source", name="in", alternatives=("reserved", "pages", "snapshot"),
    )


def _cold_boot(prog: Program) -> bool:
    # Only a readable kho_in with fdt_phys == 0 proves a cold boot.
    try:
        return kho_in(prog) is not None and not is_kho_boot(prog)
    except drgn.FaultError:
        return False


def _kho_boot_note(prog: Program) -> List[str]:
    if _cold_boot(prog):
        return ["kho_in.fdt_phys is 0: this kernel was not booted through KHO, so nothing "
                "was handed over to it."]
    return []


def _reserved_state(prog: Program, state: Optional[MemblockState],
                    source: str) -> MemblockState:
    # Sources "reserved" and "pages" both stand on the noinit reservations.
    state = state if state is not None else read_memblock(prog, allow_stale=True)
    if state.stale:
        raise StaleMemblockError(
            f"memblock.reserved cannot be trusted ({state.stale_reason})",
            given="source", name=source,
            alternatives=tuple(s for s in ("pages", "snapshot") if s != source),
        )
    return state


def read_reserved(prog: Program, state: Optional[MemblockState] = None) -> PreservedReport:
    """Preserved memory as the ``RSRV_NOINIT`` reservations of ``memblock.reserved``.

    :param state: an already read memblock state.
    :raises StaleMemblockError: memblock was discarded after boot.
    """
    regions, notes = reserved_regions(_reserved_state(prog, state, "reserved"))
    return PreservedReport(
        source="reserved",
        ranges=tuple((r.base, r.size, None) for r in regions),
        kernel=kernel_release(prog),
        page_shift=prog["PAGE_SHIFT"].value_(),
        notes=tuple(_kho_boot_note(prog) + notes),
    )


def _scan_region(prog: Program, region: Region, *, page_shift: int, page0: int,
                 struct_size: int, private: int, notes: List[str]) -> List[Tuple[int, int]]:
    first = region.base >> page_shift
    stop = (region.end + (1 << page_shift) - 1) >> page_shift
    heads: List[Tuple[int, int]] = []
    order = byteorder(prog)
    for pfn in range(first, stop, _SCAN_PAGES):
        count = min(_SCAN_PAGES, stop - pfn)
        try:
            data = prog.read(page0 + pfn * struct_size, count * struct_size)
        except drgn.FaultError:
            notes.append(f"The struct pages of {Range(pfn << page_shift, count << page_shift)} "
                         "are not readable and were skipped.")
            continue
        heads.extend(find_magic_heads(data, pfn, struct_size=struct_size,
                                     private_offset=private, byteorder=order))
    return heads


def read_pages(prog: Program, state: Optional[MemblockState] = None) -> PreservedReport:
    """Head pages that still carry ``KHO_PAGE_MAGIC``, in the noinit reservations.

    Blocks already restored (``kho_restore_folio()`` and friends clear
    ``private``) are not found: this is what is preserved and not claimed yet.

    :raises StaleMemblockError: memblock was discarded after boot.
    """
    regions, notes = reserved_regions(_reserved_state(prog, state, "pages"))
    page_shift = prog["PAGE_SHIFT"].value_()
    page_type = prog.type("struct page")
    struct_size, private = sizeof(page_type), offsetof(page_type, "private")
    first_page = page0(prog)
    heads: List[Tuple[int, int]] = []
    for region in regions:
        heads.extend(_scan_region(prog, region, page_shift=page_shift, page0=first_page,
                                  struct_size=struct_size, private=private, notes=notes))
    return heads_to_report(heads, page_shift, kernel=kernel_release(prog),
                           notes=_kho_boot_note(prog) + notes)


def read_preserved(prog: Optional[Program], source: str, *, snapshot: Optional[str] = None,
                   keys: bool = False) -> PreservedReport:
    """Dispatch on ``source`` (one of :data:`SOURCES`).

    :param prog: the target (not needed for ``snapshot``).
    :param snapshot: the file for source ``snapshot``.
    """
    if source == "snapshot":
        if not snapshot:
            raise InputError("Source 'snapshot' needs the file of a report saved in the "
                             "previous kernel", "give it as {given}", given="snapshot")
        return load_snapshot(snapshot)
    if prog is None:
        raise ValueError(f"source {source!r} needs a program")
    if source == "in":
        refuse_incoming(prog)
    readers = {"out": lambda: read_outgoing(prog, keys), "reserved": lambda: read_reserved(prog),
               "pages": lambda: read_pages(prog)}
    return readers[source]()

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
hugetlb gigantic pages
----------------------

The ``kho_inspect.hugetlb`` module finds every gigantic hugetlb page of a
kernel (an order above ``MAX_PAGE_ORDER``: 1 GiB on x86_64) with its physical
range, node, origin and state, the hugetlb CMA areas (``hugetlb_cma=``) and
the counters of every ``struct hstate`` (docs/kernel/hugetlb.md).

* Pages are the folios on each gigantic hstate's ``hugepage_freelists[nid]``
  (free, on node ``nid``) and ``hugepage_activelist`` (in use), linked
  through ``folio->lru`` (mm/hugetlb.c:1240-1250, :2890). Each list is
  walked with one ``u64`` read per folio for the link and one for
  ``folio->private``, never one drgn object per folio, and never further
  than the hstate's ``nr_huge_pages`` allows.
* ``folio->private`` holds the ``enum hugetlb_page_flags`` bits
  (include/linux/hugetlb.h:583-592), named from debug info. ``HPG_cma``
  marks a folio from a hugetlb CMA area; it was added by Linux kernel
  commit (hash not found) "mm/hugetlb: enable bootmem allocation from CMA
  areas" (in v6.15). Before it, the kernel told CMA folios by their address
  (``cma_free_folio(hugetlb_cma[nid], folio)``), and so does this module.
* A boot-time folio carries no mark of its own: ``gather_bootmem_prealloc_node()``
  (mm/hugetlb.c:3296-3348) gives it the same ``init_new_hugetlb_folio()`` as
  a runtime one and gives its pages back to the zone's managed count. So the
  origin comes from outside the folio, in this order: memblock where the
  kernel keeps it (``memblock.reserved`` regions flagged ``RSRV_HUGETLB``,
  by name); ``hugetlb_cma=``, with which the kernel makes no boot-time page
  outside CMA; a ``memblock=debug`` kernel log that starts at boot (the
  ``memblock_alloc_hugetlb`` reservations); else the origin is ``"unknown"``.
  memblock and the log are read only when a folio is not a CMA one.
* ``hugetlb_cma[MAX_NUMNODES]`` (mm/hugetlb_cma.c:20, static) holds one
  ``struct cma *`` per node.
"""

from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import drgn
from drgn import Object, Program, offsetof, sizeof

from kho_inspect.bootlog import parse_bootlog
from kho_inspect.diagnosis import cma_ranges
from kho_inspect.errors import (
    KhoInspectError,
    MemoryReadError,
    NotInKernelError,
    StaleMemblockError,
)
from kho_inspect.memblock import memblock_flag_table, read_memblock
from kho_inspect.model.bootlog import BootLog
from kho_inspect.model.hugetlb import (
    CmaArea,
    HstateNode,
    HstateSummary,
    HugePage,
    HugetlbReport,
)
from kho_inspect.pageblock import max_page_order
from kho_inspect.printk import read_kernel_log
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.target import byteorder, find_variable, node_ids, online_pgdats, page0

__all__ = ("read_hugetlb", "boot_allocations")

RSRV_HUGETLB = "RSRV_HUGETLB"
"""The memblock flag of boot-time gigantic pages (Linux 7.3, by name)."""

HPG_PREFIX = "HPG_"
HPG_CMA = "HPG_cma"

BOOTMEM_CALLERS = ("alloc_bootmem", "__alloc_bootmem_huge_page", "alloc_bootmem_huge_page")
"""Who asked memblock for a boot-time gigantic page before ``memblock_alloc_hugetlb()``
existed (``memblock_alloc_try_nid_raw()``/``memblock_alloc_exact_nid_raw()``)."""

_READ_ERRORS = (LookupError, drgn.FaultError, drgn.ObjectAbsentError, ValueError)


# --- boot pages: memblock or the boot log ------------------------------------


def boot_allocations(log: BootLog) -> RangeSet:
    """The boot-time gigantic page allocations of a ``memblock=debug`` log (pure).

    An allocation counts when ``memblock_alloc_hugetlb()`` made it (its request
    or reservation line), it carries ``RSRV_HUGETLB``, or, on kernels before
    that function, one of :data:`BOOTMEM_CALLERS` asked for it.
    """
    return RangeSet(a.range for a in log.allocations
                    if a.request == "memblock_alloc_hugetlb"
                    or a.caller == "memblock_alloc_hugetlb"
                    or RSRV_HUGETLB in a.flags or a.caller in BOOTMEM_CALLERS)


class _BootPages:
    """What tells boot-time pages from buddy pages on this kernel."""

    def __init__(self) -> None:
        self.ranges: Optional[RangeSet] = None
        self.source: Optional[str] = None
        self.why_not: List[str] = []


def _from_memblock(prog: Program, found: _BootPages) -> None:
    try:
        state = read_memblock(prog)
    except StaleMemblockError:
        found.why_not.append("memblock was not kept after boot (or cannot be trusted)")
        return
    except KhoInspectError as e:
        found.why_not.append(f"memblock cannot be read ({e.what.rstrip('.')})")
        return
    if not state.flags.has(RSRV_HUGETLB):
        found.why_not.append(f"this kernel's enum memblock_flags has no {RSRV_HUGETLB}")
        return
    found.ranges, found.source = state.reserved.ranges(RSRV_HUGETLB), "memblock"


def _from_log(prog: Program, found: _BootPages) -> None:
    try:
        log = parse_bootlog(read_kernel_log(prog), memblock_flag_table(prog))
    except (KhoInspectError, *_READ_ERRORS):
        found.why_not.append("the kernel log cannot be read")
        return
    if log.truncated:
        found.why_not.append("the kernel log no longer starts at boot (boot with log_buf_len=)")
    elif not log.allocations:
        found.why_not.append("the kernel log has no memblock=debug lines")
    else:
        found.ranges, found.source = boot_allocations(log), "boot log"


def _from_hugetlb_cma(prog: Program, has_areas: bool, found: _BootPages) -> None:
    # With hugetlb_cma= reserved, hugetlb_hstate_alloc_pages() skips boot-time
    # gigantic allocation, or makes it from CMA with hugetlb_cma_only
    # (mm/hugetlb.c:3636-3640, mm/hugetlb_cma.c:405-411); hugetlb_cma_reserve()
    # runs just before it (mm/mm_init.c:2633-2634) and leaves hugetlb_cma_size 0
    # when it reserved nothing (mm/hugetlb_cma.c:380-386). The same since Linux
    # kernel commit cf11e85fc08c ("mm: hugetlb: optionally allocate gigantic
    # hugepages using cma") (in v5.7).
    try:
        size = find_variable(prog, ("hugetlb_cma_size",), "hugetlb_cma.c")[1].value_()
    except _READ_ERRORS:
        size = int(has_areas)
    if size:
        found.ranges, found.source = RangeSet(), "hugetlb_cma"
    else:
        found.why_not.append("no hugetlb_cma= area rules boot-time pages out")


def _boot_pages(prog: Program, has_cma_areas: bool) -> _BootPages:
    found = _BootPages()
    for reader in (_from_memblock, lambda p, f: _from_hugetlb_cma(p, has_cma_areas, f),
                   _from_log):
        reader(prog, found)
        if found.source is not None:
            break
    return found


# --- the folio lists -----------------------------------------------------------


class _Folio(NamedTuple):
    phys: int
    node: Optional[int]
    state: str
    private: int


class _FolioLists:
    """Walks ``struct folio`` lists linked through ``folio->lru``, one ``u64`` per link."""

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        folio = prog.type("struct folio")
        self.lru = offsetof(folio, "lru")
        self.private = offsetof(folio, "private")
        self.page0 = page0(prog)
        self.page_size = sizeof(prog.type("struct page"))
        self.page_shift = prog["PAGE_SHIFT"].value_()
        self.notes: List[str] = []

    def walk(self, head: int, limit: int, what: str) -> List[Tuple[int, int]]:
        """``(phys, folio->private)`` of every folio on the list at ``head``."""
        read = self.prog.read_u64
        out: List[Tuple[int, int]] = []
        entry = read(head)
        while entry and entry != head:
            if len(out) >= limit:
                self.notes.append(f"{what} is longer than the hstate's nr_huge_pages (the "
                                  "kernel changed while it was read); the rest is not shown.")
                break
            folio = entry - self.lru
            pfn, rem = divmod(folio - self.page0, self.page_size)
            if rem or pfn < 0:
                self.notes.append(f"{what} links {entry:#x}, which is not in a struct page; "
                                  "the rest of the list is not shown.")
                break
            out.append((pfn << self.page_shift, read(folio + self.private)))
            entry = read(entry)
        return out


def _list_heads(prog: Program, array: Object) -> List[int]:
    """The ``next`` pointer of each ``struct list_head`` of an array, in one read."""
    count = array.type_.length or 0
    step, word = sizeof(array.type_.type), sizeof(prog.type("void *"))
    raw = prog.read(array.address_, step * count)
    order = byteorder(prog)
    return [int.from_bytes(raw[i * step:i * step + word], order)  # type: ignore[arg-type]
            for i in range(count)]


def _folios(prog: Program, walker: _FolioLists, h: Object, numa: bool) -> List[_Folio]:
    name = h.name.string_().decode(errors="replace")
    limit = h.nr_huge_pages.value_() + 1
    freelists = h.hugepage_freelists
    base, step = freelists.address_, sizeof(freelists.type_.type)
    out: List[_Folio] = []
    for nid, first in enumerate(_list_heads(prog, freelists)):
        head = base + nid * step
        if first in (0, head):
            continue
        for phys, private in walker.walk(head, limit, f"{name} hugepage_freelists[{nid}]"):
            out.append(_Folio(phys, nid if numa else None, "free", private))
    active = h.hugepage_activelist.address_
    for phys, private in walker.walk(active, limit, f"{name} hugepage_activelist"):
        out.append(_Folio(phys, None, "in use", private))
    return out


class _Nodes:
    """The node of a pfn, from the spans of every online node's zones."""

    def __init__(self, prog: Program) -> None:
        self.spans: List[Tuple[int, int, int]] = []
        for pgdat in online_pgdats(prog):
            nid = pgdat.node_id.value_()
            for zone in pgdat.node_zones:
                span = zone.spanned_pages.value_()
                if span:
                    start = zone.zone_start_pfn.value_()
                    self.spans.append((start, start + span, nid))

    def of(self, pfn: int) -> Optional[int]:
        return next((nid for start, end, nid in self.spans if start <= pfn < end), None)


# --- hugetlb_cma[] -------------------------------------------------------------


def _cma_areas(prog: Program, numa: bool) -> List[CmaArea]:
    try:
        _, table = find_variable(prog, ("hugetlb_cma",), "hugetlb_cma.c")
    except LookupError:  # no CONFIG_CMA, or a kernel without hugetlb CMA
        return []
    page_shift = prog["PAGE_SHIFT"].value_()
    areas = []
    try:
        for nid, pointer in enumerate(table.value_()):
            if not pointer:
                continue
            cma = Object(prog, table.type_.type, pointer)
            name = cma.name.string_().decode(errors="replace")
            areas += [CmaArea(r.base, r.size, nid if numa else None, name)
                      for r in cma_ranges(cma, page_shift)]
    except drgn.FaultError as e:
        raise MemoryReadError(f"hugetlb_cma[] cannot be read ({e.message})") from e
    return areas


# --- origins ---------------------------------------------------------------------


def _hpg_names(prog: Program) -> Dict[int, str]:
    """Bit number -> name of ``enum hugetlb_page_flags`` (empty if absent)."""
    try:
        enum = prog.type("enum hugetlb_page_flags")
    except LookupError:
        return {}
    return {e.value: e.name for e in enum.enumerators or ()
            if e.name.startswith(HPG_PREFIX)}


def _flag_names(private: int, names: Dict[int, str]) -> Tuple[str, ...]:
    bits = [b for b in range(private.bit_length()) if private >> b & 1]
    return tuple(names[b][len(HPG_PREFIX):] if b in names else hex(1 << b) for b in bits)


class _Origins:
    """Decides each folio's origin; reads memblock or the log only when a
    folio is not a CMA one, and collects what looked wrong."""

    def __init__(self, prog: Program, cma_bit: Optional[int], cma: RangeSet) -> None:
        self.prog = prog
        self.cma_bit = cma_bit
        self.cma = cma
        self.boot: Optional[_BootPages] = None
        self.notes: List[str] = []

    def _cma(self, folio: _Folio, rng: Range) -> Optional[str]:
        if self.cma_bit is None:  # before HPG_cma: cma_free_folio() went by address
            return "hugetlb_cma area" if self.cma.covers(rng) else None
        if folio.private >> self.cma_bit & 1:
            if not self.cma.covers(rng):
                self.notes.append(f"The {HPG_CMA} folio {rng} lies outside every "
                                  "hugetlb_cma area.")
            return HPG_CMA
        if self.cma.overlaps(rng):
            self.notes.append(f"The folio {rng} lies in a hugetlb_cma area without {HPG_CMA}.")
        return None

    def of(self, folio: _Folio, size: int) -> Tuple[str, Optional[str]]:
        """``(origin, what decided it)`` of a folio of ``size`` bytes."""
        rng = Range(folio.phys, size)
        source = self._cma(folio, rng)
        if source is not None:
            return "cma", source
        if self.boot is None:
            self.boot = _boot_pages(self.prog, bool(self.cma))
        ranges = self.boot.ranges
        if ranges is None:
            return "unknown", None
        if ranges.covers(rng):
            return "boot", self.boot.source
        if ranges.overlaps(rng):
            self.notes.append(f"The folio {rng} only partly lies in boot-time gigantic "
                              f"allocations ({self.boot.source}).")
        return "buddy", self.boot.source


def _orphan_notes(prog: Program, boot: Optional[_BootPages],
                  pages: Sequence[HugePage]) -> List[str]:
    """``RSRV_HUGETLB`` reservations that hold no gigantic folio (memblock only)."""
    if boot is None:  # only CMA folios so far: memblock is cheap, the log is not read
        boot = _BootPages()
        _from_memblock(prog, boot)
    if boot.source != "memblock" or boot.ranges is None:
        return []
    orphans = boot.ranges.subtract(RangeSet(p.range for p in pages))
    if not orphans:
        return []
    return [f"memblock.reserved RSRV_HUGETLB holds no gigantic hugetlb folio at "
            f"{', '.join(str(r) for r in orphans)}: freed since boot, isolated, or not yet "
            "a folio (a dump taken during boot)."]


def _origin_notes(pages: Sequence[HugePage], boot: Optional[_BootPages]) -> List[str]:
    if boot is None:  # every page came from CMA
        return []
    unknown = sum(1 for p in pages if p.origin == "unknown")
    if unknown:
        many = f"{unknown} gigantic pages have" if unknown > 1 else "1 gigantic page has"
        return [f"{many} origin unknown: a boot-time folio carries no mark of its own after "
                "boot (mm/hugetlb.c:3296-3348), and " + "; ".join(boot.why_not) + ". Boot "
                "with memblock=debug log_buf_len=8M to tell them apart on a kernel that "
                "discards memblock."]
    if boot.source == "memblock" and any(p.origin == "boot" for p in pages):
        return ["Boot-time pages are the folios inside memblock.reserved RSRV_HUGETLB "
                "regions; memblock keeps such a region after the page is freed, so a runtime "
                "page allocated there later would show as boot-time too."]
    if boot.source == "boot log":
        return ["Boot-time pages are the folios inside the memblock_alloc_hugetlb "
                "reservations of the memblock=debug kernel log (memblock was not kept)."]
    if boot.source == "hugetlb_cma":
        return ["hugetlb_cma= is set, so the kernel made no boot-time gigantic page outside "
                "CMA (mm/hugetlb.c:3636-3640): every other gigantic page came from the buddy "
                "allocator."]
    return []


# --- hstates ---------------------------------------------------------------------


def _node_counters(h: Object, nodes: Iterable[int]) -> Tuple[HstateNode, ...]:
    nr = h.nr_huge_pages_node.value_()
    free = h.free_huge_pages_node.value_()
    surplus = h.surplus_huge_pages_node.value_()
    return tuple(HstateNode(nid, nr[nid], free[nid], surplus[nid]) for nid in nodes)


def _summary(h: Object, size: int, gigantic: bool, nodes: Sequence[int]) -> HstateSummary:
    return HstateSummary(
        name=h.name.string_().decode(errors="replace"),
        size=size,
        order=h.order.value_(),
        nr_huge_pages=h.nr_huge_pages.value_(),
        free_huge_pages=h.free_huge_pages.value_(),
        surplus_huge_pages=h.surplus_huge_pages.value_(),
        gigantic=gigantic,
        resv_huge_pages=h.resv_huge_pages.value_(),
        nodes=_node_counters(h, nodes),
    )


def _count_notes(summary: HstateSummary, pages: Sequence[HugePage]) -> List[str]:
    free = sum(1 for p in pages if p.state == "free")
    if (len(pages), free) == (summary.nr_huge_pages, summary.free_huge_pages):
        return []
    return [f"{summary.name}: {len(pages)} folios on its lists ({free} free), but "
            f"nr_huge_pages is {summary.nr_huge_pages} ({summary.free_huge_pages} free): "
            "folios being allocated, freed, migrated or isolated are on no list, and a "
            "running kernel may have changed while it was read."]


def _hstates(prog: Program) -> List[Object]:
    try:
        hstates = prog["hstates"]
    except LookupError as e:
        raise NotInKernelError("This kernel has no hugetlb pages (no hstates: "
                               "CONFIG_HUGETLBFS is not set)", name="hstates") from e
    return [h.address_of_() for h in hstates[:prog["hugetlb_max_hstate"]]]


def _numa(hstates: Sequence[Object]) -> bool:
    # MAX_NUMNODES is 1 << CONFIG_NODES_SHIFT with NUMA, where NODES_SHIFT is at
    # least 1, and 1 without (include/linux/nodemask_types.h:7-13).
    return bool(hstates) and (hstates[0].hugepage_freelists.type_.length or 0) > 1


def _memory_nodes(prog: Program, numa: bool) -> List[int]:
    if not numa:
        return []
    try:
        return node_ids(prog, prog["N_MEMORY"])
    except LookupError:
        return []


def read_hugetlb(prog: Program) -> HugetlbReport:
    """Every gigantic hugetlb page, the hugetlb CMA areas and every hstate of ``prog``.

    :raises NotInKernelError: the kernel has no hugetlb.
    :raises MemoryReadError: the hstates or ``hugetlb_cma[]`` cannot be read.
    """
    hstates = _hstates(prog)
    try:
        return _read(prog, hstates)
    except drgn.FaultError as e:
        raise MemoryReadError(f"The hugetlb state cannot be read ({e.message})") from e


class _Hstate(NamedTuple):
    summary: HstateSummary
    folios: List[_Folio]


def _scan(prog: Program, hstates: Sequence[Object], numa: bool,
          walker: _FolioLists) -> List[_Hstate]:
    page_shift = prog["PAGE_SHIFT"].value_()
    max_order = max_page_order(prog)
    nodes = _memory_nodes(prog, numa)
    out = []
    for h in hstates:
        order = h.order.value_()
        gigantic = order > max_order
        summary = _summary(h, 1 << (order + page_shift), gigantic, nodes)
        out.append(_Hstate(summary, _folios(prog, walker, h, numa) if gigantic else []))
    return out


def _pages(prog: Program, scanned: Sequence[_Hstate], numa: bool, origins: _Origins,
           names: Dict[int, str]) -> List[HugePage]:
    page_shift = prog["PAGE_SHIFT"].value_()
    spans: Optional[_Nodes] = None
    pages = []
    for hstate in scanned:
        size, name = hstate.summary.size, hstate.summary.name
        for f in hstate.folios:
            node = f.node
            if node is None and numa:  # an in-use folio: no per-node list says
                spans = spans or _Nodes(prog)
                node = spans.of(f.phys >> page_shift)
            origin, source = origins.of(f, size)
            pages.append(HugePage(f.phys, size, node, origin, f.state, name,
                                  _flag_names(f.private, names), source))
    return sorted(pages, key=lambda p: p.phys)


def _read(prog: Program, hstates: Sequence[Object]) -> HugetlbReport:
    numa = _numa(hstates)
    names = _hpg_names(prog)
    cma_areas = _cma_areas(prog, numa)
    walker = _FolioLists(prog)
    scanned = _scan(prog, hstates, numa, walker)
    cma_bit = next((b for b, n in names.items() if n == HPG_CMA), None)
    origins = _Origins(prog, cma_bit, RangeSet(a.range for a in cma_areas))
    pages = _pages(prog, scanned, numa, origins, names)
    notes = [n for h in scanned if h.summary.gigantic
             for n in _count_notes(h.summary, [p for p in pages if p.hstate == h.summary.name])]
    notes += walker.notes + origins.notes + _origin_notes(pages, origins.boot)
    notes += _orphan_notes(prog, origins.boot, pages)
    if not names:
        notes.append("The debug info has no enum hugetlb_page_flags: hugetlb CMA folios are "
                     "told by their address in the hugetlb_cma areas.")
    return HugetlbReport(pages=tuple(pages), cma_areas=tuple(cma_areas),
                         hstates=tuple(h.summary for h in scanned), notes=tuple(notes),
                         boot_source=origins.boot.source if origins.boot else None)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Pageblock migratetypes
----------------------

The ``kho_inspect.pageblock`` module reads the migratetype of pageblocks from
the SPARSEMEM section usemaps, ``mem_section[nr]->usage->pageblock_flags``,
the way ``get_pfnblock_migratetype()`` does (mm/page_alloc.c), and summarises a
physical range as runs of one migratetype instead of one line per pageblock
(:class:`~kho_inspect.model.pageblock.PageblockRun`; the bit layout and its
decoding are in :mod:`kho_inspect.model.pageblock`). Every constant comes from the
target: ``enum pageblock_bits`` and ``enum migratetype`` from debug info,
``SECTION_SIZE_BITS`` from vmcoreinfo. ``pageblock_order`` is a macro on most
configurations and is derived as documented in :func:`pageblock_layout`.

Each section's usemap is read with one read, and the section array with one
read per SPARSEMEM root, so the cost grows with the number of sections, not
pageblocks.
"""

import zlib
from struct import unpack_from
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import drgn
from drgn import Program, offsetof, sizeof

from kho_inspect.errors import DebugInfoError
from kho_inspect.model.pageblock import PageblockLayout, PageblockRun, merge_runs, runs_in_section
from kho_inspect.ranges import Range
from kho_inspect.target import kernel_config

__all__ = (
    "SectionUsemaps",
    "max_page_order",
    "migratetype_runs",
    "pageblock_layout",
)


def _enumerators(prog: Program, name: str) -> Dict[str, int]:
    try:
        enum = prog.type(name)
    except LookupError as e:
        raise DebugInfoError(
            f"The debug info has no {name}: pass a vmlinux built with CONFIG_DEBUG_INFO."
        ) from e
    return {e.name: e.value for e in enum.enumerators or ()}


def _migratetype_names(prog: Program) -> Dict[int, str]:
    # Aliases share values: MIGRATE_PCPTYPES == MIGRATE_HIGHATOMIC and
    # __MIGRATE_TYPE_END == MIGRATE_CMA; keep the real migratetypes.
    names: Dict[int, str] = {}
    for name, value in _enumerators(prog, "enum migratetype").items():
        if name.startswith("__") or name in ("MIGRATE_PCPTYPES", "MIGRATE_TYPES"):
            continue
        names[value] = name[len("MIGRATE_"):] if name.startswith("MIGRATE_") else name
    return names


def _pageblock_bits(prog: Program) -> Tuple[int, int, int]:
    """``(NR_PAGEBLOCK_BITS, PAGEBLOCK_MIGRATETYPE_MASK, PAGEBLOCK_ISO_MASK)``."""
    bits = _enumerators(prog, "enum pageblock_bits")
    try:
        return _pageblock_masks(bits)
    except KeyError as e:
        raise DebugInfoError(
            f"enum pageblock_bits has no {e} enumerator: this kernel lays out pageblock flags "
            "in a way kho-inspect does not know."
        ) from e


def _pageblock_masks(bits: Mapping[str, int]) -> Tuple[int, int, int]:
    try:
        count = bits["__NR_PAGEBLOCK_BITS"]
    except KeyError:
        # Before "mm/page_isolation: make page isolation a standalone bit."
        # (Zi Yan, v6 posting 20250530162227.715551-3-ziy@nvidia.com; mainline
        # commit not found, docs/kernel/history.md#pageblock-isolate-bit), the
        # enum ended with NR_PAGEBLOCK_BITS itself (4) and MIGRATE_ISOLATE was a
        # migratetype value; that series added the roundup macro.
        count = bits["NR_PAGEBLOCK_BITS"]
    nr = 1 << (count - 1).bit_length()  # roundup_pow_of_two()
    if "PB_migrate_0" in bits:
        mt_mask = sum(1 << bits[f"PB_migrate_{i}"] for i in range(3))
    else:
        # Older kernels name the three bits PB_migrate .. PB_migrate_end (the
        # commit of the rename was not found in the sources available).
        mt_mask = sum(1 << b for b in range(bits["PB_migrate"], bits["PB_migrate_end"] + 1))
    iso = bits.get("PB_migrate_isolate")  # only with CONFIG_MEMORY_ISOLATION
    return nr, mt_mask, 0 if iso is None else 1 << iso


def _kconfig_int(prog: Program, name: str) -> Optional[int]:
    # Needs CONFIG_IKCONFIG; the gzip'ed config may also be unreadable or torn.
    try:
        return int(kernel_config(prog)[name])
    except (LookupError, ValueError, OSError, EOFError, zlib.error, drgn.FaultError):
        return None


def _pageblock_order(prog: Program, page_shift: int) -> Tuple[int, str]:
    """``pageblock_order`` and where it came from (include/linux/pageblock-flags.h)."""
    try:
        # CONFIG_HUGETLB_PAGE_SIZE_VARIABLE (powerpc): a real variable.
        return prog["pageblock_order"].value_(), "variable pageblock_order"
    except (LookupError, drgn.FaultError):
        pass
    # Otherwise a macro: min(HUGETLB_PAGE_ORDER or HPAGE_PMD_ORDER,
    # PAGE_BLOCK_MAX_ORDER), or PAGE_BLOCK_MAX_ORDER without huge pages.
    max_order = _kconfig_int(prog, "CONFIG_PAGE_BLOCK_MAX_ORDER")
    max_source = "CONFIG_PAGE_BLOCK_MAX_ORDER"
    if max_order is None:
        # PAGE_BLOCK_MAX_ORDER defaults to MAX_PAGE_ORDER = NR_PAGE_ORDERS - 1.
        max_order = max_page_order(prog)
        max_source = "MAX_PAGE_ORDER"
    if not _has_huge_pages(prog):
        return max_order, f"{max_source}={max_order} (no huge pages)"
    # A PMD maps a page of 8-byte entries: HPAGE_PMD_ORDER = PAGE_SHIFT - 3 on
    # x86_64, arm64 and riscv64.
    pmd_order = page_shift - 3
    return min(pmd_order, max_order), f"min(HPAGE_PMD_ORDER={pmd_order}, {max_source}={max_order})"


def max_page_order(prog: Program) -> int:
    free_area = prog.type("struct zone").member("free_area").type
    return free_area.length - 1


def _has_huge_pages(prog: Program) -> bool:
    for symbol in ("hstates", "transparent_hugepage_flags"):
        try:
            prog[symbol]
        except LookupError:
            continue
        return True
    return False


def pageblock_layout(prog: Program, pageblock_order: Optional[int] = None) -> PageblockLayout:
    """Read the pageblock flag layout of the target.

    ``pageblock_order`` is the variable of that name where the kernel has one
    (``CONFIG_HUGETLB_PAGE_SIZE_VARIABLE``); otherwise the macro is evaluated:
    ``min(HPAGE_PMD_ORDER, PAGE_BLOCK_MAX_ORDER)`` with huge pages (``hstates``
    or ``transparent_hugepage_flags`` present), where ``HPAGE_PMD_ORDER`` is
    ``PAGE_SHIFT - 3`` and ``PAGE_BLOCK_MAX_ORDER`` is
    ``CONFIG_PAGE_BLOCK_MAX_ORDER`` from the in-kernel config
    (``CONFIG_IKCONFIG``) or else ``MAX_PAGE_ORDER`` (the length of
    ``struct zone::free_area`` minus one).

    :param pageblock_order: use this instead of deriving it.
    :raises DebugInfoError: the kernel has no SPARSEMEM or no such enums.
    """
    try:
        section_size_bits = prog["SECTION_SIZE_BITS"].value_()
    except LookupError as e:
        raise DebugInfoError(
            "The target has no SECTION_SIZE_BITS (vmcoreinfo) or is not a SPARSEMEM kernel: "
            "pageblock migratetypes can only be read from SPARSEMEM section usemaps."
        ) from e
    page_shift = prog["PAGE_SHIFT"].value_()
    if pageblock_order is None:
        order, source = _pageblock_order(prog, page_shift)
    else:
        order, source = pageblock_order, "given"
    nr, mt_mask, iso_mask = _pageblock_bits(prog)
    platform = prog.platform
    little = platform is None or bool(platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    return PageblockLayout(
        page_shift=page_shift,
        section_size_bits=section_size_bits,
        pageblock_order=order,
        nr_pageblock_bits=nr,
        migratetype_mask=mt_mask,
        isolate_mask=iso_mask,
        migratetypes=_migratetype_names(prog),
        byteorder="little" if little else "big",
        word_size=sizeof(prog.type("unsigned long")),
        pageblock_order_source=source,
    )


def _section_root(prog: Program, root: int) -> int:
    """The address of the first ``struct mem_section`` of SPARSEMEM root ``root``
    (0 if the root is absent): drgn's ``nr_to_section(root * SECTIONS_PER_ROOT)``."""
    if root >= prog["NR_SECTION_ROOTS"].value_():
        return 0
    mem_section = prog["mem_section"]
    if mem_section.type_.unaliased_kind() == drgn.TypeKind.POINTER:  # SPARSEMEM_EXTREME
        mem_section = mem_section.read_()
        if not mem_section:
            return 0
    first = mem_section[root]
    if first.type_.unaliased_kind() == drgn.TypeKind.POINTER:
        return first.value_()
    return first.address_


class SectionUsemaps:
    """Reads section usemaps of ``struct mem_section``, each exactly once.

    The section array is read one SPARSEMEM root at a time
    (``SECTIONS_PER_ROOT`` entries in one read), and each usemap
    (``usage->pageblock_flags``) in one read.
    """

    def __init__(self, prog: Program, layout: PageblockLayout) -> None:
        self.prog = prog
        self.layout = layout
        section = prog.type("struct mem_section")
        self.section_size = sizeof(section)
        self.usage_offset = offsetof(section, "usage")
        self.flags_offset = offsetof(prog.type("struct mem_section_usage"), "pageblock_flags")
        self.per_root = prog["SECTIONS_PER_ROOT"].value_()
        self.ptr_format = ("<" if layout.byteorder == "little" else ">") + (
            "Q" if layout.word_size == 8 else "I")
        self._roots: Dict[int, Optional[bytes]] = {}
        self._codes: Dict[int, Optional[List[int]]] = {}

    def _root(self, root: int) -> Optional[bytes]:
        try:
            return self._roots[root]
        except KeyError:
            pass
        first = _section_root(self.prog, root)
        data = None
        if first:
            data = self.prog.read(first, self.per_root * self.section_size)
        self._roots[root] = data
        return data

    def usage(self, nr: int) -> int:
        """The ``struct mem_section_usage *`` of section ``nr`` (0 if none)."""
        data = self._root(nr // self.per_root)
        if data is None:
            return 0
        off = (nr % self.per_root) * self.section_size + self.usage_offset
        return unpack_from(self.ptr_format, data, off)[0]

    def codes(self, nr: int) -> Optional[List[int]]:
        """Block codes of section ``nr`` (see :meth:`PageblockLayout.block_codes`),
        or ``None`` when the section has no usemap."""
        try:
            return self._codes[nr]
        except KeyError:
            pass
        usage = self.usage(nr)
        codes = None
        if usage:
            raw = self.prog.read(usage + self.flags_offset, self.layout.usemap_bytes)
            codes = self.layout.block_codes(raw)
        self._codes[nr] = codes
        return codes

    def runs(self, rng: Range) -> List[PageblockRun]:
        """Migratetype runs covering ``rng``, merged across sections."""
        bits = self.layout.section_size_bits
        out: List[PageblockRun] = []
        if not rng:
            return out
        for nr in range(rng.base >> bits, ((rng.end - 1) >> bits) + 1):
            out.extend(runs_in_section(self.layout, nr << bits, self.codes(nr), rng))
        return merge_runs(out)


def migratetype_runs(
    prog: Program, ranges: Iterable[Range], layout: Optional[PageblockLayout] = None
) -> List[PageblockRun]:
    """The pageblock migratetypes of ``ranges`` as runs, in range order.

    :param ranges: physical ranges (``Range``), for example a scratch class.
    :param layout: from :func:`pageblock_layout` (read if not given).
    :return: runs clipped to the ranges; runs of adjacent ranges are merged.
    """
    reader = SectionUsemaps(prog, layout or pageblock_layout(prog))
    out: List[PageblockRun] = []
    for rng in ranges:
        out.extend(reader.runs(rng))
    return merge_runs(out)

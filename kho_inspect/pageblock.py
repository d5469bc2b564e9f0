"""
Pageblock migratetypes
----------------------

The ``kho_inspect.pageblock`` module reads the migratetype of pageblocks from
the SPARSEMEM section usemaps, ``mem_section[nr]->usage->pageblock_flags``,
the way ``get_pfnblock_migratetype()`` does (mm/page_alloc.c), and summarises a
physical range as runs of one migratetype instead of one line per pageblock.

The bit of a pageblock is ``((pfn & (PAGES_PER_SECTION - 1)) >> pageblock_order)
* NR_PAGEBLOCK_BITS`` (``pfn_to_bitidx()``); the migratetype is the
``PB_migrate_*`` bits, and ``PB_migrate_isolate`` (where the kernel has it) a
separate bit (include/linux/pageblock-flags.h). Every constant comes from the
target: ``enum pageblock_bits`` and ``enum migratetype`` from debug info,
``SECTION_SIZE_BITS`` from vmcoreinfo. ``pageblock_order`` is a macro on most
configurations and is derived as documented in :func:`pageblock_layout`.

Each section's usemap is read with one read, and the section array with one
read per SPARSEMEM root, so the cost grows with the number of sections, not
pageblocks.
"""

import zlib
from array import array
from dataclasses import dataclass
from functools import cache
from itertools import groupby
from struct import unpack_from
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import drgn
from drgn import Program, offsetof, sizeof
from drgn.helpers.linux.kconfig import get_kconfig
from drgn.helpers.linux.mmzone import nr_to_section

from kho_inspect.errors import DebugInfoError
from kho_inspect.ranges import Range

__all__ = (
    "NO_MEMMAP",
    "PageblockLayout",
    "PageblockRun",
    "SectionUsemaps",
    "merge_runs",
    "migratetype_bytes",
    "migratetype_runs",
    "pageblock_layout",
)

NO_MEMMAP = "NO_MEMMAP"
"""Pseudo migratetype of pageblocks whose section has no usemap (a hole)."""

_ISOLATED = 0x100  # flag added to a code above any byte value


@dataclass(frozen=True)
class PageblockLayout:
    """How a kernel stores pageblock flags in section usemaps.

    >>> lay = PageblockLayout(12, 27, 9, 8, 0x7, 0x10, {1: "MOVABLE", 4: "CMA"})
    >>> lay.pageblock_size, lay.blocks_per_section, lay.usemap_bytes
    (2097152, 64, 64)

    :param page_shift: ``PAGE_SHIFT``.
    :param section_size_bits: ``SECTION_SIZE_BITS``.
    :param pageblock_order: ``pageblock_order``.
    :param nr_pageblock_bits: ``NR_PAGEBLOCK_BITS`` (4 or 8).
    :param migratetype_mask: ``PAGEBLOCK_MIGRATETYPE_MASK``.
    :param isolate_mask: ``PAGEBLOCK_ISO_MASK`` (0 where isolation is a
        migratetype value rather than a separate bit).
    :param migratetypes: ``enum migratetype`` value -> name without ``MIGRATE_``.
    :param byteorder: the target's byte order.
    :param word_size: ``sizeof(unsigned long)``.
    :param pageblock_order_source: where ``pageblock_order`` came from.
    """

    page_shift: int
    section_size_bits: int
    pageblock_order: int
    nr_pageblock_bits: int
    migratetype_mask: int
    isolate_mask: int
    migratetypes: Mapping[int, str]
    byteorder: str = "little"
    word_size: int = 8
    pageblock_order_source: str = "given"

    @property
    def pageblock_size(self) -> int:
        return 1 << (self.page_shift + self.pageblock_order)

    @property
    def section_size(self) -> int:
        return 1 << self.section_size_bits

    @property
    def blocks_per_section(self) -> int:
        return 1 << (self.section_size_bits - self.page_shift - self.pageblock_order)

    @property
    def usemap_bytes(self) -> int:
        """``usemap_size()``: the bitmap rounded up to whole ``unsigned long``."""
        bits = self.blocks_per_section * self.nr_pageblock_bits
        word_bits = 8 * self.word_size
        return -(-bits // word_bits) * self.word_size

    def name(self, code: int) -> str:
        """The migratetype name of a code from :meth:`block_codes`."""
        if code < 0:
            return NO_MEMMAP
        value = code & self.migratetype_mask
        return self.migratetypes.get(value, f"{value:#x}")

    def block_codes(self, usemap: bytes) -> List[int]:
        """One code per pageblock of a section: migratetype bits, plus
        ``0x100`` when the separate isolate bit is set.

        :param usemap: the section's ``pageblock_flags`` words as read.
        """
        raw = self._block_bytes(usemap)
        keep = raw.translate(_mask_table(self.migratetype_mask))
        if not self.isolate_mask:
            return list(keep)
        iso = raw.translate(_mask_table(self.isolate_mask))
        return [k | (_ISOLATED if i else 0) for k, i in zip(keep, iso)]

    def _block_bytes(self, usemap: bytes) -> bytes:
        # The flags of block i, one byte per block, from the unsigned long
        # words of DECLARE_BITMAP (bit i of word i / BITS_PER_LONG).
        n, nr = self.blocks_per_section, self.nr_pageblock_bits
        data = _little_words(usemap, self.byteorder, self.word_size)
        if nr == 8:
            return data[:n]
        if nr == 4:
            out = bytearray(2 * len(data))
            out[0::2] = data.translate(_mask_table(0xF))
            out[1::2] = data.translate(_HIGH_NIBBLE)
            return bytes(out[:n])
        bits = int.from_bytes(data, "little")
        mask = (1 << nr) - 1
        return bytes((bits >> (i * nr)) & mask & 0xFF for i in range(n))

    def to_json(self) -> Dict[str, object]:
        return {
            "page_shift": self.page_shift,
            "section_size_bits": self.section_size_bits,
            "pageblock_order": self.pageblock_order,
            "pageblock_order_source": self.pageblock_order_source,
            "nr_pageblock_bits": self.nr_pageblock_bits,
            "migratetype_mask": self.migratetype_mask,
            "isolate_mask": self.isolate_mask,
            "migratetypes": {str(v): n for v, n in sorted(self.migratetypes.items())},
        }


@cache
def _mask_table(mask: int) -> bytes:
    # bytes.translate table: b -> b & mask.
    return bytes(b & mask for b in range(256))


_HIGH_NIBBLE = bytes(b >> 4 for b in range(256))


def _little_words(data: bytes, byteorder: str, word_size: int) -> bytes:
    # Reverse each word on a big-endian target so that bit i of the bytes,
    # read little-endian, is bit i of the bitmap.
    if byteorder == "little":
        return bytes(data)
    words = array({8: "Q", 4: "I"}[word_size], bytes(data))
    words.byteswap()
    return words.tobytes()


@dataclass(frozen=True)
class PageblockRun:
    """A physical range whose pageblocks share one migratetype.

    :param migratetype: name without ``MIGRATE_`` (``"CMA"``), or
        :data:`NO_MEMMAP`.
    :param isolated: the separate ``PB_migrate_isolate`` bit is set
        (transiently, during ``alloc_contig_range()``).
    """

    base: int
    size: int
    migratetype: str
    isolated: bool = False

    @property
    def end(self) -> int:
        return self.base + self.size

    def to_json(self) -> Dict[str, object]:
        return {
            "base": self.base,
            "size": self.size,
            "migratetype": self.migratetype,
            "isolated": self.isolated,
        }


def merge_runs(runs: Iterable[PageblockRun]) -> List[PageblockRun]:
    """Join runs that touch and have the same migratetype and isolate bit."""
    out: List[PageblockRun] = []
    for run in runs:
        if (
            out
            and out[-1].end == run.base
            and (out[-1].migratetype, out[-1].isolated) == (run.migratetype, run.isolated)
        ):
            out[-1] = PageblockRun(out[-1].base, out[-1].size + run.size, run.migratetype,
                                   run.isolated)
        else:
            out.append(run)
    return out


def migratetype_bytes(runs: Iterable[PageblockRun]) -> Dict[str, int]:
    """Bytes per migratetype name (isolated blocks count under their type)."""
    out: Dict[str, int] = {}
    for run in runs:
        out[run.migratetype] = out.get(run.migratetype, 0) + run.size
    return dict(sorted(out.items()))


def runs_in_section(
    layout: PageblockLayout, section_base: int, codes: Optional[Sequence[int]], rng: Range
) -> List[PageblockRun]:
    """The runs of ``rng`` (clipped to the section at ``section_base``).

    :param codes: :meth:`PageblockLayout.block_codes` of the section, or
        ``None`` when the section has no usemap.
    """
    start = max(rng.base, section_base)
    end = min(rng.end, section_base + layout.section_size)
    if start >= end:
        return []
    if codes is None:
        return [PageblockRun(start, end - start, NO_MEMMAP)]
    shift = layout.page_shift + layout.pageblock_order
    first = (start - section_base) >> shift
    last = (end - 1 - section_base) >> shift
    runs = []
    block = first
    for code, group in groupby(codes[first:last + 1]):
        count = sum(1 for _ in group)
        lo = max(start, section_base + (block << shift))
        hi = min(end, section_base + ((block + count) << shift))
        runs.append(PageblockRun(lo, hi - lo, layout.name(code), bool(code & _ISOLATED)))
        block += count
    return runs


# --- drgn -------------------------------------------------------------------


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
        # Before Zi Yan's "make page isolation a standalone bit" series (2025),
        # the enum ended with NR_PAGEBLOCK_BITS itself (4) and MIGRATE_ISOLATE
        # was a migratetype value; that series added the roundup macro.
        count = bits["NR_PAGEBLOCK_BITS"]
    nr = 1 << (count - 1).bit_length()  # roundup_pow_of_two()
    if "PB_migrate_0" in bits:
        mt_mask = sum(1 << bits[f"PB_migrate_{i}"] for i in range(3))
    else:
        # Older kernels name the three bits PB_migrate .. PB_migrate_end.
        mt_mask = sum(1 << b for b in range(bits["PB_migrate"], bits["PB_migrate_end"] + 1))
    iso = bits.get("PB_migrate_isolate")  # only with CONFIG_MEMORY_ISOLATION
    return nr, mt_mask, 0 if iso is None else 1 << iso


def _kconfig_int(prog: Program, name: str) -> Optional[int]:
    # Needs CONFIG_IKCONFIG; the gzip'ed config may also be unreadable or torn.
    try:
        return int(get_kconfig(prog)[name])
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
        max_order = _max_page_order(prog)
        max_source = "MAX_PAGE_ORDER"
    if not _has_huge_pages(prog):
        return max_order, f"{max_source}={max_order} (no huge pages)"
    # A PMD maps a page of 8-byte entries: HPAGE_PMD_ORDER = PAGE_SHIFT - 3 on
    # x86_64, arm64 and riscv64.
    pmd_order = page_shift - 3
    return min(pmd_order, max_order), f"min(HPAGE_PMD_ORDER={pmd_order}, {max_source}={max_order})"


def _max_page_order(prog: Program) -> int:
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
        first = nr_to_section(self.prog, root * self.per_root)
        data = None
        if first.value_():
            data = self.prog.read(first.value_(), self.per_root * self.section_size)
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

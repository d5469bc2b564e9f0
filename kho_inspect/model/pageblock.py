# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Pageblock model
---------------

The ``kho_inspect.model.pageblock`` module holds how a kernel stores pageblock
migratetypes (:class:`PageblockLayout`, read by
:func:`kho_inspect.pageblock.pageblock_layout`) and the runs of one
migratetype that a physical range is summarised as (:class:`PageblockRun`),
with the pure helpers that decode a section usemap into runs. No drgn here.

The bit of a pageblock is ``((pfn & (PAGES_PER_SECTION - 1)) >> pageblock_order)
* NR_PAGEBLOCK_BITS`` (``pfn_to_bitidx()``, mm/page_alloc.c); the migratetype
is the ``PB_migrate_*`` bits, and ``PB_migrate_isolate`` (where the kernel has
it) a separate bit (include/linux/pageblock-flags.h).
"""

from array import array
from functools import cache
from itertools import groupby
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel
from kho_inspect.ranges import Range

__all__ = (
    "NO_MEMMAP",
    "PageblockLayout",
    "PageblockRun",
    "merge_runs",
    "migratetype_bytes",
    "runs_in_section",
)

NO_MEMMAP = "NO_MEMMAP"
"""Pseudo migratetype of pageblocks whose section has no usemap (a hole)."""

_ISOLATED = 0x100  # flag added to a code above any byte value


@frozen
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

    def to_json(self) -> Dict[str, Any]:
        """The layout as ``kho scratch --json`` shows it; ``byteorder`` and
        ``word_size`` appear only where they are not little-endian and 8."""
        out: Dict[str, Any] = {
            "page_shift": self.page_shift,
            "section_size_bits": self.section_size_bits,
            "pageblock_order": self.pageblock_order,
            "pageblock_order_source": self.pageblock_order_source,
            "nr_pageblock_bits": self.nr_pageblock_bits,
            "migratetype_mask": self.migratetype_mask,
            "isolate_mask": self.isolate_mask,
            "migratetypes": {str(v): n for v, n in sorted(self.migratetypes.items())},
        }
        if self.byteorder != "little":
            out["byteorder"] = self.byteorder
        if self.word_size != 8:
            out["word_size"] = self.word_size
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "PageblockLayout":
        return cls(
            page_shift=int(obj["page_shift"]),
            section_size_bits=int(obj["section_size_bits"]),
            pageblock_order=int(obj["pageblock_order"]),
            nr_pageblock_bits=int(obj["nr_pageblock_bits"]),
            migratetype_mask=int(obj["migratetype_mask"]),
            isolate_mask=int(obj["isolate_mask"]),
            migratetypes={int(v): str(n) for v, n in obj["migratetypes"].items()},
            byteorder=str(obj.get("byteorder", "little")),
            word_size=int(obj.get("word_size", 8)),
            pageblock_order_source=str(obj["pageblock_order_source"]),
        )


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


@frozen
class PageblockRun(JsonModel):
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

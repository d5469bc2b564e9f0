"""
KHO preserved-memory radix tree
-------------------------------

The ``kho_inspect.radix`` module decodes the structures in which a kernel
records the memory it preserves across a Kexec HandOver: the radix tree of
``struct kho_radix_node`` tables and ``struct kho_radix_leaf`` bitmaps
(include/linux/kho/abi/kexec_handover.h, KHO FDT ``kho-v2`` and later), and the
older ``kho-v1`` list of ``struct khoser_mem_chunk`` pages.

The module is pure: it never imports drgn. A walker takes a ``read_page(phys)``
callable that returns one page of physical memory, reads every page of the
structure exactly once, and returns a :class:`PreservedMemory`: the preserved
memory as coalesced ``(phys, size, order)`` ranges, the structure's own pages,
and a per-order histogram. Its cost grows with the number of tree pages and of
discontiguities, not with the number of preserved pages: a full or empty leaf
is one byte comparison, and a partial leaf one word-by-word pass of a small C
extension (``kho_inspect._radixscan``) that appends one tuple per run; without
it (not built, or ``KHO_INSPECT_PURE=1``), two ``bytes.translate`` passes plus
one ``memchr`` (``bytes.find``) and a table lookup per run boundary. Runs are
carried across leaves and tables as they are found. A malformed structure
raises :class:`~kho_inspect.errors.CorruptTreeError`
naming the path from the root to the bad entry; the walk never loops.
"""

import os
import struct
from array import array
from bisect import bisect_right
from functools import cache, cached_property, reduce
from itertools import compress, groupby, repeat
from operator import itemgetter, or_
from types import ModuleType
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from kho_inspect.errors import CorruptTreeError
from kho_inspect.frozen import frozen
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "RadixGeometry",
    "PreservedRange",
    "PreservedMemory",
    "ReadPage",
    "RamSpec",
    "encode_key",
    "decode_key",
    "walk_radix_tree",
    "decode_khoser_chunks",
    "coalesce_ranges",
    "bitmap_runs",
)

ReadPage = Callable[[int], bytes]
"""``read_page(phys) -> bytes``: one page of physical memory at ``phys``."""

RamSpec = Union[RangeSet, Callable[[int], bool], None]
"""Valid RAM: a :class:`~kho_inspect.ranges.RangeSet`, ``is_ram(phys) -> bool``
(asked for each page address), or ``None`` to accept any address."""

_U64_MASK = (1 << 64) - 1
_TWO64 = 1 << 64
# bytes.translate tables: one turns every byte that holds a set bit into 1, the
# other every byte that holds a clear bit; bytes.find (memchr) on the result
# then jumps over a whole stretch of 0x00 or 0xff bytes in one call.
_NONZERO_BYTES = bytes([0] + [1] * 255)
_NON_FF_BYTES = bytes([1] * 255 + [0])
# _EDGES[c][b]: bits i of byte b that differ from the bit below them, bit -1
# being c; the run boundaries inside byte b when the bits before it end in c.
_EDGES = tuple(
    tuple(tuple(i for i in range(8) if (b ^ (b << 1 | c)) >> i & 1) for b in range(256))
    for c in (0, 1)
)
_TREE_ADVICE = "; the tree is corrupt or was reused, snapshot it in the kernel that preserved it"
_READ_ADVICE = "; the tree is corrupt or the target does not contain that page"
_CHUNK_ADVICE = (
    "; the chunk list is corrupt or was freed, snapshot it in the kernel that finalized it"
)


@frozen
class RadixGeometry:
    """The radix tree ABI constants for one page size (abi header, ``KHO_*``).

    >>> RadixGeometry()
    RadixGeometry(page_shift=12)
    >>> g = RadixGeometry(); g.key_width, g.table_entries, g.bitmap_bits, g.max_depth
    (53, 512, 32768, 6)

    :param page_shift: ``PAGE_SHIFT`` of the kernel that built the tree.
    """

    page_shift: int = 12

    def __post_init__(self) -> None:
        if not 10 <= self.page_shift <= 20:
            raise ValueError(f"unsupported page_shift {self.page_shift}")

    @cached_property
    def page_size(self) -> int:
        """``PAGE_SIZE``: every table and leaf is one page."""
        return 1 << self.page_shift

    @cached_property
    def key_width(self) -> int:
        """``KHO_RADIX_KEY_WIDTH`` = 64 - PAGE_SHIFT + 1: the widest valid key."""
        return 64 - self.page_shift + 1

    @cached_property
    def table_log2(self) -> int:
        """``KHO_TABLE_SIZE_LOG2``: log2 of the u64 entries per table."""
        return self.page_shift - 3

    @cached_property
    def table_entries(self) -> int:
        """Entries of ``struct kho_radix_node.table``."""
        return 1 << self.table_log2

    @cached_property
    def bitmap_log2(self) -> int:
        """``KHO_BITMAP_SIZE_LOG2`` = PAGE_SHIFT + 3."""
        return self.page_shift + 3

    @cached_property
    def bitmap_bits(self) -> int:
        """Bits of ``struct kho_radix_leaf.bitmap``."""
        return 1 << self.bitmap_log2

    @cached_property
    def max_depth(self) -> int:
        """``KHO_TREE_MAX_DEPTH``: table levels plus the bitmap level."""
        return -(-(self.key_width - self.bitmap_log2) // self.table_log2) + 1

    @cached_property
    def root_level(self) -> int:
        """Level of the root table (5 with 4 KiB pages); level 0 is the bitmap."""
        return self.max_depth - 1

    @cached_property
    def max_order(self) -> int:
        """The largest order a key can encode (its order bit is then bit 0)."""
        return self.key_width - 1

    def level_shift(self, level: int) -> int:
        """Bit position of the level's table index in a key (level >= 1)."""
        return (level - 1) * self.table_log2 + self.bitmap_log2

    def indices(self, key: int) -> Tuple[int, ...]:
        """Table indices from the root down to level 1, then the leaf bit.

        >>> RadixGeometry().indices(0x10000000123456)
        (2, 0, 0, 0, 36, 13398)
        """
        mask = self.table_entries - 1
        tables = tuple(
            (key >> self.level_shift(level)) & mask for level in range(self.root_level, 0, -1)
        )
        return tables + (key & (self.bitmap_bits - 1),)


@cache
def _geometry(page_shift: int) -> RadixGeometry:
    # One shared instance per page size, so its cached properties stay warm.
    return RadixGeometry(page_shift)


def encode_key(phys: int, order: int, page_shift: int = 12) -> int:
    """The radix key of a preserved block (``kho_encode_radix_key()``).

    ``key = (1 << (64 - (PAGE_SHIFT + order))) | (phys >> (PAGE_SHIFT + order))``.

    >>> hex(encode_key(0x240000000, 9))
    '0x80000001200'

    :param phys: ``phys_addr_t`` of the block, aligned to its size.
    :param order: folio order of the block.
    :raises ValueError: if the order is out of range or ``phys`` is not
        naturally aligned (the kernel would silently drop the low bits).
    """
    geom = _geometry(page_shift)
    if not 0 <= order <= geom.max_order:
        raise ValueError(f"order {order} is outside 0..{geom.max_order}")
    shift = page_shift + order
    if not 0 <= phys <= _U64_MASK or phys & ((1 << shift) - 1):
        raise ValueError(f"phys {phys:#x} is not a {1 << shift:#x}-aligned 64-bit address")
    return (1 << (64 - shift)) | (phys >> shift)


def decode_key(key: int, page_shift: int = 12) -> Tuple[int, int]:
    """The ``(phys, order)`` a radix key stands for (``kho_decode_radix_key()``).

    >>> [hex(x) for x in decode_key(0x80000001200)]
    ['0x240000000', '0x9']

    :param key: a key of ``kho_radix_add_key()``, ``1 <= key < 1 << key_width``.
    :raises ValueError: for key 0 and for keys wider than ``KHO_RADIX_KEY_WIDTH``.
    """
    geom = _geometry(page_shift)
    if key <= 0 or key.bit_length() > geom.key_width:
        raise ValueError(f"{key:#x} is not a valid {geom.key_width}-bit radix key")
    order = geom.key_width - key.bit_length()
    return (key << (page_shift + order)) & _U64_MASK, order


PreservedRange = Tuple[int, int, int]
"""``(phys, size, order)``: naturally aligned blocks of one order, back to back.

A plain tuple, not a named one: a fragmented tree yields hundreds of thousands
of ranges, and plain tuples are several times cheaper to build."""


@frozen
class PreservedMemory:
    """What a preserved-memory structure describes, and what it is made of.

    :param ranges: coalesced preserved ranges, in the kernel's walk order:
        larger orders first, ascending address within an order.
    :param tree_pages: physical address of every page of the structure itself
        (radix tables and leaves, root included; kho-v1 chunk pages), in visit
        order.
    :param histogram: order -> number of preserved blocks (keys) of that order.
    :param keys: the raw radix keys in walk order, when asked for.
    :param bitmaps: kho-v1 only: the 512-byte ``struct kho_mem_phys_bits``
        blocks, in visit order.
    :param page_shift: ``PAGE_SHIFT`` of the kernel that built the structure.
    """

    ranges: Tuple[PreservedRange, ...]
    tree_pages: Tuple[int, ...]
    histogram: Mapping[int, int]
    keys: Optional[Tuple[int, ...]] = None
    bitmaps: Tuple[int, ...] = ()
    page_shift: int = 12

    @property
    def total_blocks(self) -> int:
        """Number of preserved blocks (radix keys) of all orders."""
        return sum(self.histogram.values())

    @property
    def total_bytes(self) -> int:
        """Bytes preserved, all orders together."""
        return sum(self.bytes_by_order().values())

    def bytes_by_order(self) -> Dict[int, int]:
        """Order -> bytes preserved in blocks of that order."""
        return {o: n << (self.page_shift + o) for o, n in self.histogram.items()}

    def of_order(self, order: int) -> Tuple[PreservedRange, ...]:
        """The ranges of one order, ascending."""
        return tuple(r for r in self.ranges if r[2] == order)

    def range_set(self) -> RangeSet:
        """Every preserved byte as one :class:`RangeSet`, orders merged."""
        return RangeSet(Range(phys, size) for phys, size, _ in self.ranges)

    def footprint(self) -> RangeSet:
        """The memory the structure itself occupies (pages and bitmaps)."""
        page = 1 << self.page_shift
        return RangeSet(
            [Range(p, page) for p in self.tree_pages]
            + [Range(b, _KHOSER_BITMAP_BYTES) for b in self.bitmaps]
        )


def coalesce_ranges(triples: Iterable[Tuple[int, int, int]]) -> List[PreservedRange]:
    """Merge ``(phys, size, order)`` triples of the same order that touch or overlap.

    The result is in walk order: larger orders first, ascending address within
    an order. Ranges of different orders are never merged.
    """
    out: List[PreservedRange] = []
    for phys, size, order in sorted(triples, key=lambda t: (-t[2], t[0])):
        if size <= 0:
            continue
        if out and out[-1][2] == order and phys <= out[-1][0] + out[-1][1]:
            start, length, _ = out[-1]
            out[-1] = (start, max(length, phys + size - start), order)
        else:
            out.append((phys, size, order))
    return out


def bitmap_runs(bitmap: bytes) -> List[Tuple[int, int]]:
    """Runs of set bits ``[start, end)`` of a little-endian bitmap, ascending.

    ``bitmap`` is a ``DECLARE_BITMAP`` (bit i in word i / 64) laid out as
    little-endian words, so bit i is bit ``i % 8`` of byte ``i // 8``. Bits are
    never visited one by one: see :func:`_scan_bitmap`, which this wraps.
    """
    out: List[PreservedRange] = []
    open_run = _scan_bitmap(_le_words(bitmap, "little"), 0, -1, out, 0, 0)
    if open_run >= 0:
        out.append((open_run, len(bitmap) * 8 - open_run, 0))
    return [(start, start + size) for start, size, _ in out]


@cache
def _edge_tables(
    shift: int,
) -> Tuple[Tuple[Optional[int], ...], Tuple[Optional[int], ...],
           Tuple[Tuple[Tuple[int, ...], ...], ...]]:
    # _EDGES with positions scaled to bytes of memory (bit i stands for
    # i << shift), and the bytes with exactly one boundary picked out: "rise"
    # for a byte entered between runs (its set bits are bits k..7: a run
    # starts at bit k and goes on into the next byte), "fall" for one entered
    # inside a run (its set bits are bits 0..k-1: the run ends at bit k and
    # the rest of the byte is a hole); None marks a byte with other boundaries.
    rise = tuple(e[0] << shift if len(e) == 1 else None for e in _EDGES[0])
    fall = tuple(e[0] << shift if len(e) == 1 else None for e in _EDGES[1])
    edges = tuple(tuple(tuple(i << shift for i in e) for e in by_byte) for by_byte in _EDGES)
    return rise, fall, edges


def _scan_bitmap_py(
    bits: bytes, base: int, open_run: int, out: List[PreservedRange], shift: int, order: int
) -> int:
    """Append the runs of set bits of a little-endian bitmap to ``out``.

    The pure-Python scanner: the reference, and what :func:`_scan_bitmap`
    runs when the native one (``kho_inspect/_radixscan.c``) is not built or
    ``KHO_INSPECT_PURE=1`` is set.

    Bit ``i`` stands for the memory at ``base + (i << shift)``; each run that
    ends inside ``bits`` is appended as ``(start, size, order)`` in those
    units. ``open_run`` is where a run that reaches bit 0 began (``-1`` if
    bit -1 is clear); the return value is where the run that reaches the last
    bit began, or ``-1``, so that a caller carries runs from one bitmap to the
    next contiguous one.

    The work is per run, not per bit or word: ``memchr`` over a 0/1 copy of
    the bitmap finds the byte where the next run starts, ``memchr`` over
    another the byte where it ends, and one table lookup per byte turns each
    into the bit. In the hot loop the state is implicit (between runs at the
    top of a turn, one range appended per turn). Bytes with several
    boundaries (runs or holes shorter than a byte) leave the loop for
    :func:`_byte_runs` and come back.
    """
    rise, fall, edges = _edge_tables(shift)
    unit = 8 << shift  # bytes of memory per bitmap byte
    next_set = bits.translate(_NONZERO_BYTES).find
    next_clear = bits.translate(_NON_FF_BYTES).find
    append = out.append
    at = 0  # the first byte not scanned yet
    while True:
        if open_run >= 0:  # a run is open at byte `at`: find where it ends
            end = next_clear(1, at)
            if end < 0:
                return open_run
            fall_at = fall[bits[end]]
            at = end + 1
            if fall_at is None:
                open_run = _byte_runs(edges[1][bits[end]], base + end * unit, open_run, out, order)
                continue
            append((open_run, base + end * unit + fall_at - open_run, order))
            open_run = -1
        while True:  # between runs: one run per turn
            start = next_set(1, at)
            if start < 0:
                return -1
            rise_at = rise[bits[start]]
            if rise_at is None:
                open_run = _byte_runs(edges[0][bits[start]], base + start * unit, -1, out, order)
                at = start + 1
                break
            end = next_clear(1, start + 1)
            if end < 0:
                return base + start * unit + rise_at
            fall_at = fall[bits[end]]
            at = end + 1
            if fall_at is None:
                open_run = _byte_runs(edges[1][bits[end]], base + end * unit,
                                      base + start * unit + rise_at, out, order)
                break
            append((base + start * unit + rise_at, (end - start) * unit + fall_at - rise_at,
                    order))


def _byte_runs(
    edges: Tuple[int, ...], at: int, open_run: int, out: List[PreservedRange], order: int
) -> int:
    # The boundaries of one byte, alternately run starts and ends.
    for edge in edges:
        if open_run < 0:
            open_run = at + edge
        else:
            out.append((open_run, at + edge - open_run, order))
            open_run = -1
    return open_run


def _native_module() -> Optional[ModuleType]:
    # kho_inspect/_radixscan.c, built by setup.py when a C compiler is there:
    # _scan_bitmap_py, and the leaves of a whole level-1 table in one call,
    # in C, each run appended as one tuple (see bench/README.md).
    try:
        from kho_inspect import _radixscan
    except ImportError:
        return None
    return _radixscan


_NATIVE = _native_module()
# The native code in use: _NATIVE unless KHO_INSPECT_PURE is set (to anything
# but "" or "0"); None for pure Python. Both give the same results.
_native = _NATIVE if os.environ.get("KHO_INSPECT_PURE", "") in ("", "0") else None


def _scan_bitmap(
    bits: bytes, base: int, open_run: int, out: List[PreservedRange], shift: int, order: int
) -> int:
    """:func:`_scan_bitmap_py`, or its native twin when in use."""
    scan = _scan_bitmap_py if _native is None else _native.scan_bitmap
    return scan(bits, base, open_run, out, shift, order)


def _le_words(page: bytes, byteorder: str) -> bytes:
    # Bitmaps are arrays of unsigned long; on a big-endian target reverse
    # each 64-bit word so that bit i of the bytes is bit i of the bitmap.
    # Always bytes, which _scan_bitmap_py needs (read_page may return a buffer).
    if byteorder == "little":
        return page if isinstance(page, bytes) else bytes(page)
    words = array("Q", page)
    words.byteswap()
    return words.tobytes()


class _Ram:
    # Where structure pages may live: a RangeSet or an is_ram(phys) callable.

    def __init__(self, ram: Union[RangeSet, Callable[[int], bool]], size: int) -> None:
        self._is_ram = ram if callable(ram) else None
        self._starts = () if callable(ram) else tuple(r.base for r in ram)
        self._ends = () if callable(ram) else tuple(r.end for r in ram)
        self._size = size

    def holds(self, phys: int) -> bool:
        """Whether ``[phys, phys + size)`` is RAM."""
        if self._is_ram is not None:
            return bool(self._is_ram(phys))
        return self.holds_span(phys, phys)

    def holds_span(self, first: int, last: int) -> bool:
        """Whether ``[first, last + size)`` lies in one RAM range (RangeSet only)."""
        i = bisect_right(self._starts, first) - 1
        return i >= 0 and last + self._size <= self._ends[i]

    def holds_all(self, addrs: Sequence[int]) -> bool:
        """A cheap sufficient test for many addresses: one range holds them all."""
        return self._is_ram is None and self.holds_span(min(addrs), max(addrs))


def _ram(ram: RamSpec, size: int) -> Optional[_Ram]:
    return None if ram is None else _Ram(ram, size)


def _add_runs(
    ranges: List[PreservedRange], key: int, runs: Sequence[Tuple[int, int]], geom: RadixGeometry
) -> None:
    """Record keys ``key + lo .. key + hi - 1`` of each ascending ``(lo, hi)``.

    The per-run path, for the leaves whose keys mix orders. Keys must be valid
    (nonzero, within the key width) and ascend across calls; the last range
    of ``ranges`` grows when the first run continues it.
    """
    if not runs:
        return
    if (key + runs[0][0]).bit_length() == (key + runs[-1][1] - 1).bit_length():
        _one_order(ranges, key, runs, geom)
        return
    # Keys of one order share a bit length; split where it changes.
    for lo, hi in runs:
        first, stop = key + lo, key + hi
        while first < stop:
            part = min(stop, 1 << first.bit_length())
            _one_order(ranges, first, ((0, part - first),), geom)
            first = part


def _one_order(
    ranges: List[PreservedRange], key: int, runs: Sequence[Tuple[int, int]], geom: RadixGeometry
) -> None:
    order = geom.key_width - (key + runs[0][0]).bit_length()
    shift = geom.page_shift + order
    # phys(key + lo) = ((key + lo) << shift) mod 2^64, and the order bit
    # lands exactly on bit 64, so subtracting it is the modulo.
    base = (key << shift) - _TWO64
    start = end = -1
    if ranges and ranges[-1][2] == order:
        start, size, _ = ranges.pop()
        end = start + size
    for lo, hi in runs:
        phys = base + (lo << shift)
        if phys != end:
            if end >= 0:
                ranges.append((start, end - start, order))
            start = phys
        end = base + (hi << shift)
    ranges.append((start, end - start, order))


def _histogram(ranges: Sequence[PreservedRange], page_shift: int) -> Dict[int, int]:
    """Order -> blocks, from ranges that never overlap within an order."""
    histogram: Dict[int, int] = {}
    for order, group in groupby(ranges, itemgetter(2)):
        blocks = sum(map(itemgetter(1), group)) >> (page_shift + order)
        histogram[order] = histogram.get(order, 0) + blocks
    return dict(sorted(histogram.items(), reverse=True))


def _range_keys(ranges: Sequence[PreservedRange], page_shift: int) -> Tuple[int, ...]:
    """The keys of walk-ordered ranges, in walk order (ascending)."""
    keys: List[int] = []
    for phys, size, order in ranges:
        shift = page_shift + order
        first = (1 << (64 - shift)) | (phys >> shift)
        keys.extend(range(first, first + (size >> shift)))
    return tuple(keys)


class _RadixWalk:
    # One walk of a radix tree: the state behind walk_radix_tree().

    def __init__(
        self, read_page: ReadPage, geom: RadixGeometry, ram: RamSpec, byteorder: str
    ) -> None:
        self.read_page = read_page
        self.geom = geom
        self.ram = _ram(ram, geom.page_size)
        self.byteorder = byteorder
        self.byte_order_char = "<" if byteorder == "little" else ">"
        self.ones = b"\xff" * geom.page_size
        self.zeros = bytes(geom.page_size)
        # Preserved ranges in walk order; the last one may still grow.
        self.ranges: List[PreservedRange] = []
        # Every page entered: phys -> path of the table pointing to it (None
        # for the root), in visit order; and each table's nonzero entries, to
        # name the entry of a first visit when a page comes back.
        self.seen: Dict[int, Optional[Tuple[int, ...]]] = {}
        self.children: Dict[Tuple[int, ...], Tuple[List[int], List[int]]] = {}
        # Blocks by order counted by the native scanner as it went, and how
        # many ranges came before (those of the mixed-order leaves).
        self.counted: Dict[int, int] = {}
        self.uncounted = 0

    def path_text(self, path: Sequence[int], index: int = -1) -> str:
        # "root[2] -> L4[0] -> L1[32]": names the entry that leads somewhere.
        indices = list(path) + ([index] if index >= 0 else [])
        if not indices:
            return "root"
        names = ["root"] + [f"L{lvl}" for lvl in range(self.geom.root_level - 1, 0, -1)]
        names.append("bit")
        return " -> ".join(f"{names[depth]}[{i}]" for depth, i in enumerate(indices))

    def corrupt(
        self, path: Sequence[int], index: int, problem: str, advice: str = _TREE_ADVICE
    ) -> CorruptTreeError:
        return CorruptTreeError(f"{self.path_text(path, index)}: {problem}{advice}")

    def check(self, path: Tuple[int, ...], index: int, phys: int) -> None:
        """Raise unless ``phys`` may point to a tree page not visited yet."""
        if phys & (self.geom.page_size - 1):
            problem = "is not page aligned"
        elif self.ram is not None and not self.ram.holds(phys):
            problem = "points outside RAM"
        elif phys in self.seen:
            problem = f"points to a page already visited at {self.where(phys)}"
        else:
            return
        what = f"entry {phys:#x}" if index >= 0 else f"table address {phys:#x}"
        raise self.corrupt(path, index, f"{what} {problem}")

    def where(self, phys: int) -> str:
        """The path of the entry through which the walk first entered ``phys``."""
        parent = self.seen[phys]
        if parent is None:
            return "the root"
        indices, values = self.children[parent]
        return self.path_text(parent, indices[values.index(phys)])

    def read_error(
        self, path: Tuple[int, ...], index: int, phys: int, exc: Exception
    ) -> CorruptTreeError:
        return self.corrupt(path, index, f"cannot read page {phys:#x} ({exc})", _READ_ADVICE)

    def check_length(self, path: Tuple[int, ...], index: int, phys: int, page: bytes) -> None:
        if len(page) != self.geom.page_size:
            problem = f"read of page {phys:#x} returned {len(page)} bytes"
            raise self.corrupt(path, index, problem, _READ_ADVICE)

    def enter(self, path: Tuple[int, ...], index: int, phys: int) -> bytes:
        """Check a pointer to a tree page, then read the page (exactly once)."""
        self.check(path, index, phys)
        self.seen[phys] = path if index >= 0 else None
        try:
            page = self.read_page(phys)
        except Exception as exc:
            raise self.read_error(path, index, phys, exc) from exc
        self.check_length(path, index, phys, page)
        return page

    def entries(
        self, path: Tuple[int, ...], level: int, prefix: int, page: bytes
    ) -> Tuple[List[int], List[int]]:
        """Indices and values of the nonzero entries of a table, width-checked."""
        # Unpack only the words between the first and the last nonzero byte
        # (memchr on a 0/1 copy): most tables but level 1 hold a few entries.
        nonzero = page.translate(_NONZERO_BYTES)
        lo = nonzero.find(1)
        if lo < 0:
            return [], []
        first, stop = lo >> 3, (nonzero.rfind(1) >> 3) + 1
        table = struct.unpack(f"{self.byte_order_char}{stop - first}Q", page[first << 3:stop << 3])
        used = list(compress(range(first, stop), table))
        values = list(compress(table, table))
        shift, width = self.geom.level_shift(level), self.geom.key_width
        if (prefix | (used[-1] << shift)) >> width:
            bad = next(j for j, i in enumerate(used) if (prefix | (i << shift)) >> width)
            problem = f"entry {values[bad]:#x} would hold keys wider than {width} bits"
            raise self.corrupt(path, used[bad], problem)
        return used, values

    def table(self, path: Tuple[int, ...], level: int, prefix: int, page: bytes) -> None:
        indices, values = self.entries(path, level, prefix, page)
        self.children[path] = indices, values
        if level == 1:
            self.leaves(path, prefix, indices, values)
            return
        shift = self.geom.level_shift(level)
        for i, entry in zip(indices, values):
            child = self.enter(path, i, entry)
            self.table(path + (i,), level - 1, prefix | (i << shift), child)

    def leaves(
        self, path: Tuple[int, ...], prefix: int, indices: List[int], values: List[int]
    ) -> None:
        """Read the leaves of a level-1 table and record their runs.

        This is the hot loop: one leaf per 128 MiB of order-0 keys. Under a
        nonzero prefix every key of the table has the same order, so runs
        are recorded as ranges directly and carried from leaf to leaf (and
        into the next table) while they touch. The native scanner gets all
        the leaves of the table, read in order, in one call; without it,
        :meth:`scan_leaves_py` compares each leaf with a full and an empty
        one and scans the others with :func:`_scan_bitmap`. The checks of
        :meth:`enter` run on the whole table at once when they pass; if any
        fails, each pointer is checked just before its read, so that the
        error names the first bad entry.
        """
        if not prefix:
            self.mixed_order_leaves(path, prefix, indices, values)
            self.uncounted = len(self.ranges)
            return
        if not indices:
            return
        checked = self.enter_all(path, values)
        geom = self.geom
        order = geom.key_width - prefix.bit_length()
        shift = geom.page_shift + order
        leaf_shift = geom.bitmap_log2 + shift  # a leaf spans 1 << leaf_shift bytes
        base0 = (prefix << shift) - _TWO64  # phys of the table's first key (see _one_order)
        ranges = self.ranges
        # A run open at the end of the previous table goes on here when its
        # last range ends where the first leaf begins.
        open_run = -1
        first = base0 + (indices[0] << leaf_shift)
        if ranges and ranges[-1][2] == order and ranges[-1][0] + ranges[-1][1] == first:
            open_run = ranges.pop()[0]
        if _native is None:
            self.scan_leaves_py(path, indices, values, checked, base0, open_run, shift, order)
            return
        # Each leaf is scanned as it is read, and dropped.
        leaves = self.read_leaves(path, indices, values, checked)
        blocks = _native.scan_leaves(leaves, geom.page_size, indices[-1] + 1, base0, open_run,
                                     ranges, shift, order, self.byteorder == "big")
        if blocks:
            self.counted[order] = self.counted.get(order, 0) + blocks

    def histogram(self) -> Dict[int, int]:
        """Order -> blocks of :attr:`ranges`, as :func:`_histogram` counts them.

        The blocks the native scanner counted as it went are not counted
        again from the ranges, hundreds of thousands of tuples in a
        fragmented tree: only those of the mixed-order leaves are (orders no
        other table holds, first in walk order).
        """
        if not self.counted:
            return _histogram(self.ranges, self.geom.page_shift)
        histogram = _histogram(self.ranges[:self.uncounted], self.geom.page_shift)
        histogram.update(self.counted)
        return dict(sorted(histogram.items(), reverse=True))

    def scan_leaves_py(self, path: Tuple[int, ...], indices: List[int], values: List[int],
                       checked: bool, base0: int, open_run: int, shift: int, order: int) -> None:
        """:meth:`leaves` leaf by leaf, in Python: the reference of ``scan_leaves``.

        A run open at the end of a leaf is carried as where it began and the
        leaf index it goes on at (phys is only computed at run ends, so that
        a full leaf costs next to nothing).
        """
        ones, zeros, byteorder = self.ones, self.zeros, self.byteorder
        little = byteorder == "little"
        leaf_shift = self.geom.bitmap_log2 + shift
        ranges = self.ranges
        append = ranges.append
        go_on = indices[0]
        for i, _, page in self.read_leaves(path, indices, values, checked):
            if open_run >= 0 and i != go_on:  # a leaf is missing: the run ended
                append((open_run, base0 + (go_on << leaf_shift) - open_run, order))
                open_run = -1
            if page == ones:
                if open_run < 0:
                    open_run = base0 + (i << leaf_shift)
            elif page == zeros:
                if open_run >= 0:
                    append((open_run, base0 + (i << leaf_shift) - open_run, order))
                    open_run = -1
            else:
                bits = page if little and type(page) is bytes else _le_words(page, byteorder)
                base = base0 + (i << leaf_shift)
                open_run = _scan_bitmap(bits, base, open_run, ranges, shift, order)
            go_on = i + 1
        if open_run >= 0:
            append((open_run, base0 + (go_on << leaf_shift) - open_run, order))

    def mixed_order_leaves(
        self, path: Tuple[int, ...], prefix: int, indices: List[int], values: List[int]
    ) -> None:
        """:meth:`leaves` for the table under prefix 0, whose keys mix orders.

        Only blocks of order 29 and above (2 TiB with 4 KiB pages) live here,
        and key 0 is possible; runs go through :func:`_add_runs`.
        """
        checked = self.enter_all(path, values)
        shift, ones = self.geom.bitmap_log2, self.ones
        run_lo = run_hi = -1  # consecutive full leaves [run_lo, run_hi)
        for i, entry, page in self.read_leaves(path, indices, values, checked):
            if page == ones:
                if i != run_hi:
                    self.full_leaves(path, prefix, run_lo, run_hi)
                    run_lo = i
                run_hi = i + 1
                continue
            self.full_leaves(path, prefix, run_lo, run_hi)
            run_lo = run_hi = -1
            self.check_length(path, i, entry, page)
            self.partial_leaf(path + (i,), prefix | (i << shift), page)
        self.full_leaves(path, prefix, run_lo, run_hi)

    def read_leaves(self, path: Tuple[int, ...], indices: List[int], values: List[int],
                    checked: bool) -> Iterator[Tuple[int, int, bytes]]:
        """``(index, pointer, page)`` of a table's leaves, each pointer checked first
        unless :meth:`enter_all` already checked the whole table, each page's
        length after its read."""
        seen, read_page, size = self.seen, self.read_page, self.geom.page_size
        for i, entry in zip(indices, values):
            if not checked:
                self.check(path, i, entry)
                seen[entry] = path
            try:
                page = read_page(entry)
            except Exception as exc:
                raise self.read_error(path, i, entry, exc) from exc
            if len(page) != size:
                self.check_length(path, i, entry, page)
            yield i, entry, page

    def enter_all(self, path: Tuple[int, ...], values: List[int]) -> bool:
        """Check and record all of a table's pointers at once, if they all pass.

        Returns False, recording nothing, when any pointer fails a check of
        :meth:`check`; the caller then checks them one by one.
        """
        seen = self.seen
        if not values or reduce(or_, values) & (self.geom.page_size - 1):
            return False
        if self.ram is not None and not self.ram.holds_all(values):
            return False
        if not seen.keys().isdisjoint(values):
            return False
        before = len(seen)
        seen.update(zip(values, repeat(path)))
        if len(seen) == before + len(values):
            return True
        for phys in values:  # a page twice in this table: undo, go one by one
            seen.pop(phys, None)
        return False

    def full_leaves(self, path: Tuple[int, ...], prefix: int, lo: int, hi: int) -> None:
        if lo < 0:
            return
        shift = self.geom.bitmap_log2
        if not prefix | lo:
            raise self.corrupt(path + (lo,), 0, "key 0 is not a valid radix key")
        _add_runs(self.ranges, prefix + (lo << shift), ((0, (hi - lo) << shift),), self.geom)

    def partial_leaf(self, path: Tuple[int, ...], key: int, page: bytes) -> None:
        if page == self.zeros:
            return
        bits = _le_words(page, self.byteorder)
        if not key and bits[0] & 1:  # only the leaf under root[0] -> ... -> L1[0]
            raise self.corrupt(path, 0, "key 0 is not a valid radix key")
        _add_runs(self.ranges, key, bitmap_runs(bits), self.geom)


def walk_radix_tree(
    read_page: ReadPage,
    root_phys: int,
    *,
    keys: bool = False,
    ram: RamSpec = None,
    page_shift: int = 12,
    byteorder: str = "little",
) -> PreservedMemory:
    """Walk a KHO radix tree the way ``kho_radix_walk_tree()`` does.

    Tables are visited depth first in ascending index order, so the result
    lists larger orders first and ascending addresses within an order.

    :param read_page: returns the ``PAGE_SIZE`` bytes at a physical address;
        it is called exactly once per tree page.
    :param root_phys: physical address of the root ``struct kho_radix_node``
        (``kho_out.radix_tree.root``, or the FDT ``preserved-memory-map``).
    :param keys: also return every raw key (one int per preserved block).
    :param ram: where tree pages may live; pointers elsewhere are corrupt.
    :param page_shift: ``PAGE_SHIFT`` of the kernel that built the tree.
    :param byteorder: the target's byte order (``"little"`` or ``"big"``).
    :raises CorruptTreeError: on a misaligned, out-of-RAM, repeated or
        unreadable page pointer, an entry that implies keys wider than
        ``KHO_RADIX_KEY_WIDTH``, or key 0; the message names the path.
    """
    if byteorder not in ("little", "big"):
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
    geom = _geometry(page_shift)
    walk = _RadixWalk(read_page, geom, ram, byteorder)
    root = walk.enter((), -1, root_phys)
    walk.table((), geom.root_level, 0, root)
    ranges = tuple(walk.ranges)
    return PreservedMemory(
        ranges=ranges,
        tree_pages=tuple(walk.seen),
        histogram=walk.histogram(),
        keys=_range_keys(ranges, page_shift) if keys else None,
        page_shift=page_shift,
    )


# kho-v1 (6.16 until "kho: adopt radix tree for preserved memory tracking"):
# struct khoser_mem_chunk_hdr { u64 next_phys; unsigned int order; unsigned int num_elms; };
# struct khoser_mem_bitmap_ptr { phys_addr_t phys_start; u64 bitmap_phys; };
_KHOSER_HDR = struct.Struct("QII")
_KHOSER_ELM = struct.Struct("QQ")
_KHOSER_BITMAP_BYTES = 512  # struct kho_mem_phys_bits { DECLARE_BITMAP(preserve, 4096); }
_KHOSER_BITMAP_BITS = _KHOSER_BITMAP_BYTES * 8  # PRESERVE_BITS


class _ChunkWalk:
    # One decode of a kho-v1 chunk list: the state behind decode_khoser_chunks().

    def __init__(self, read_page: ReadPage, geom: RadixGeometry, ram: RamSpec, byteorder: str):
        self.read_page = read_page
        self.geom = geom
        self.byteorder = byteorder
        self.prefix = "<" if byteorder == "little" else ">"
        self.ram = _ram(ram, geom.page_size)
        self.bitmap_ram = _ram(ram, _KHOSER_BITMAP_BYTES)
        self.chunks: Dict[int, int] = {}  # chunk phys -> position in the list
        self.bitmaps: Dict[int, str] = {}  # bitmap phys -> where it was found
        self.starts: Dict[Tuple[int, int], str] = {}  # (order, phys_start) -> where
        self.pages: Dict[int, bytes] = {}  # bitmap pages read so far
        self.triples: List[Tuple[int, int, int]] = []
        self.histogram: Dict[int, int] = {}

    def corrupt(self, where: str, problem: str, advice: str = _CHUNK_ADVICE) -> CorruptTreeError:
        return CorruptTreeError(f"{where}: {problem}{advice}")

    def read(self, where: str, phys: int) -> bytes:
        try:
            page = self.read_page(phys)
        except Exception as exc:
            raise self.corrupt(where, f"cannot read page {phys:#x} ({exc})", _READ_ADVICE) from exc
        if len(page) != self.geom.page_size:
            raise self.corrupt(
                where, f"read of page {phys:#x} returned {len(page)} bytes", _READ_ADVICE
            )
        return page

    def chunk(self, where: str, phys: int) -> int:
        """Decode the chunk at ``phys``; return the next chunk's address."""
        n = len(self.chunks)
        if phys & (self.geom.page_size - 1):
            raise self.corrupt(where, f"chunk address {phys:#x} is not page aligned")
        if self.ram is not None and not self.ram.holds(phys):
            raise self.corrupt(where, f"chunk address {phys:#x} points outside RAM")
        if phys in self.chunks:
            first = self.chunks[phys]
            raise self.corrupt(where, f"chunk address {phys:#x} loops back to chunk[{first}]")
        self.chunks[phys] = n
        page = self.read(where, phys)
        next_phys, order, num = struct.unpack_from(self.prefix + _KHOSER_HDR.format, page)
        capacity = (self.geom.page_size - _KHOSER_HDR.size) // _KHOSER_ELM.size
        if num > capacity:
            raise self.corrupt(f"chunk[{n}]", f"num_elms {num} exceeds the capacity {capacity}")
        if self.geom.page_shift + order >= 64:
            raise self.corrupt(f"chunk[{n}]", f"order {order} is impossible")
        elms = struct.iter_unpack(
            self.prefix + _KHOSER_ELM.format,
            page[_KHOSER_HDR.size:_KHOSER_HDR.size + num * _KHOSER_ELM.size],
        )
        for j, (phys_start, bitmap_phys) in enumerate(elms):
            self.bitmap(f"chunk[{n}].bitmaps[{j}]", order, phys_start, bitmap_phys)
        return next_phys

    def bitmap(self, where: str, order: int, phys_start: int, bitmap_phys: int) -> None:
        shift = self.geom.page_shift + order
        if phys_start & ((_KHOSER_BITMAP_BITS << shift) - 1):
            raise self.corrupt(
                where, f"phys_start {phys_start:#x} is not a multiple of "
                f"{_KHOSER_BITMAP_BITS << shift:#x}",
            )
        if (order, phys_start) in self.starts:
            first = self.starts[order, phys_start]
            raise self.corrupt(
                where, f"phys_start {phys_start:#x} of order {order} repeats {first}"
            )
        self.starts[order, phys_start] = where
        if bitmap_phys & (_KHOSER_BITMAP_BYTES - 1) or not bitmap_phys:
            raise self.corrupt(where, f"bitmap_phys {bitmap_phys:#x} is not 512-byte aligned")
        if self.bitmap_ram is not None and not self.bitmap_ram.holds(bitmap_phys):
            raise self.corrupt(where, f"bitmap_phys {bitmap_phys:#x} points outside RAM")
        if bitmap_phys in self.bitmaps:
            first = self.bitmaps[bitmap_phys]
            raise self.corrupt(where, f"bitmap_phys {bitmap_phys:#x} is already used by {first}")
        self.bitmaps[bitmap_phys] = where
        page_phys = bitmap_phys & ~(self.geom.page_size - 1)
        page = self.pages.get(page_phys)
        if page is None:
            page = self.pages[page_phys] = self.read(where, page_phys)
        offset = bitmap_phys - page_phys
        bits = _le_words(page[offset:offset + _KHOSER_BITMAP_BYTES], self.byteorder)
        blocks = 0
        for lo, hi in bitmap_runs(bits):
            if phys_start + (hi << shift) > 1 << 64:
                raise self.corrupt(where, f"bit {hi - 1} describes memory beyond 2^64")
            self.triples.append((phys_start + (lo << shift), (hi - lo) << shift, order))
            blocks += hi - lo
        if blocks:
            self.histogram[order] = self.histogram.get(order, 0) + blocks


def decode_khoser_chunks(
    read_page: ReadPage,
    first_chunk_phys: int,
    *,
    ram: RamSpec = None,
    page_shift: int = 12,
    byteorder: str = "little",
) -> PreservedMemory:
    """Decode the kho-v1 serialized preserved-memory list.

    The list is a chain of one-page ``struct khoser_mem_chunk { struct
    khoser_mem_chunk_hdr hdr; struct khoser_mem_bitmap_ptr bitmaps[]; }``,
    each element pointing to a 512-byte ``struct kho_mem_phys_bits`` where bit
    b stands for ``phys_start + (b << (PAGE_SHIFT + order))``. Each page is read
    once; bitmap pages shared by several bitmaps are read once too.

    :param read_page: returns the ``PAGE_SIZE`` bytes at a physical address.
    :param first_chunk_phys: the ``preserved-memory-map`` value of a kho-v1
        FDT (0 for an empty list).
    :param ram: where chunks and bitmaps may live.
    :param page_shift: ``PAGE_SHIFT`` of the kernel that wrote the list.
    :param byteorder: the target's byte order (``"little"`` or ``"big"``).
    :return: ranges coalesced per order in walk order (larger orders first);
        ``tree_pages`` are the chunk pages and ``bitmaps`` the bitmap blocks.
    :raises CorruptTreeError: on a loop in the list, ``num_elms`` above the
        chunk's capacity, misaligned, out-of-RAM, repeated or unreadable
        pointers, a bitmap described twice, or an impossible order.
    """
    if byteorder not in ("little", "big"):
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
    walk = _ChunkWalk(read_page, _geometry(page_shift), ram, byteorder)
    where, phys = "preserved-memory-map", first_chunk_phys
    while phys:
        nxt = walk.chunk(where, phys)
        where, phys = f"chunk[{len(walk.chunks) - 1}].hdr.next", nxt
    return PreservedMemory(
        ranges=tuple(coalesce_ranges(walk.triples)),
        tree_pages=tuple(walk.chunks),
        histogram=dict(sorted(walk.histogram.items(), reverse=True)),
        bitmaps=tuple(walk.bitmaps),
        page_shift=page_shift,
    )

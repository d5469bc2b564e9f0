"""Tests for kho_inspect.radix against the independent encoder in radix_encoder.py."""

import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from array import array
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from radix_encoder import (
    FULL_LEAF_4K,
    RadixTreeEncoder,
    encode_khoser,
    poke_u64,
)

from kho_inspect import radix
from kho_inspect.errors import CorruptTreeError
from kho_inspect.radix import (
    PreservedMemory,
    RadixGeometry,
    _scan_bitmap,
    bitmap_runs,
    coalesce_ranges,
    decode_key,
    decode_khoser_chunks,
    encode_key,
    walk_radix_tree,
)
from kho_inspect.ranges import Range, RangeSet

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TREE_ADVICE = "; the tree is corrupt or was reused, snapshot it in the kernel that preserved it"
GiB = 1 << 30

# docs/kernel/radix.md#worked-examples: phys, order, key, then L5 L4 L3 L2 L1 indices and
# the leaf bit.
WORKED_EXAMPLES = [
    (0x1_0000_0000, 0, 0x10000000100000, (2, 0, 0, 0, 32, 0)),
    (0x1_2345_6000, 0, 0x10000000123456, (2, 0, 0, 0, 36, 0x3456)),
    (0x2_4000_0000, 9, 0x80000001200, (0, 2, 0, 0, 0, 4608)),
    (0x4000_0000, 18, 0x400000001, (0, 0, 2, 0, 0, 1)),
]


def reader(pages: Dict[int, bytes]):
    """A read_page over a page dict that counts reads per page."""
    counts: Dict[int, int] = {}

    def read_page(phys: int) -> bytes:
        counts[phys] = counts.get(phys, 0) + 1
        return pages[phys]

    read_page.counts = counts  # type: ignore[attr-defined]
    return read_page


def build(blocks, node_base=0x7000_0000, page_shift=12):
    enc = RadixTreeEncoder(node_base=node_base, page_shift=page_shift)
    for phys, order in blocks:
        enc.add(phys, order)
    return enc, enc.pages()


def expected_ranges(runs: List[Tuple[int, int, int]], page_shift: int = 12):
    """Walk-ordered ranges from (phys, count, order) runs, merged with RangeSet."""
    by_order: Dict[int, List[Range]] = {}
    for phys, count, order in runs:
        by_order.setdefault(order, []).append(Range(phys, count << (page_shift + order)))
    return [
        (r.base, r.size, order)
        for order in sorted(by_order, reverse=True)
        for r in RangeSet(by_order[order])
    ]


# --- geometry and keys ------------------------------------------------------


def test_geometry_4k():
    g = RadixGeometry()
    assert (g.key_width, g.table_entries, g.bitmap_bits, g.max_depth) == (53, 512, 32768, 6)
    assert g.root_level == 5
    assert [g.level_shift(lvl) for lvl in range(5, 0, -1)] == [51, 42, 33, 24, 15]


@pytest.mark.parametrize(
    "page_shift, key_width, entries, bits, depth",
    [(14, 51, 2048, 1 << 17, 5), (16, 49, 8192, 1 << 19, 4)],
)
def test_geometry_other_page_sizes(page_shift, key_width, entries, bits, depth):
    g = RadixGeometry(page_shift)
    assert (g.key_width, g.table_entries, g.bitmap_bits, g.max_depth) == (
        key_width, entries, bits, depth,
    )


@pytest.mark.parametrize("phys, order, key, indices", WORKED_EXAMPLES)
def test_worked_examples(phys, order, key, indices):
    assert encode_key(phys, order) == key
    assert decode_key(key) == (phys, order)
    assert RadixGeometry().indices(key) == indices


@pytest.mark.parametrize("key", [0, 1 << 53, (1 << 60) | 5, -1])
def test_decode_rejects_invalid_keys(key):
    with pytest.raises(ValueError, match="not a valid 53-bit radix key"):
        decode_key(key)


@pytest.mark.parametrize("phys, order", [(0x1000, 1), (0x1001, 0), (0, 53), (0, -1), (1 << 64, 0)])
def test_encode_rejects_bad_blocks(phys, order):
    with pytest.raises(ValueError):
        encode_key(phys, order)


@given(st.integers(0, 52).flatmap(
    lambda o: st.tuples(st.integers(0, (1 << (52 - o)) - 1).map(lambda i: i << (12 + o)),
                        st.just(o))))
@SETTINGS
def test_key_round_trip(block):
    phys, order = block
    key = encode_key(phys, order)
    assert 0 < key < 1 << 53
    assert decode_key(key) == (phys, order)


def test_order_bit_position():
    # The order bit sits at 52 - order: L5 index 2 is order 0, 1 is order 1, 0 is >= 2.
    g = RadixGeometry()
    assert [g.indices(encode_key(0, o))[0] for o in range(4)] == [2, 1, 0, 0]


# --- bitmap runs and coalescing ---------------------------------------------


def naive_runs(bitmap: bytes) -> List[Tuple[int, int]]:
    bits = [bitmap[i // 8] >> (i % 8) & 1 for i in range(len(bitmap) * 8)]
    runs, start = [], None
    for i, b in enumerate(bits + [0]):
        if b and start is None:
            start = i
        elif not b and start is not None:
            runs.append((start, i))
            start = None
    return runs


@given(st.binary(min_size=64, max_size=64) | st.lists(
    st.sampled_from([b"\x00" * 8, b"\xff" * 8, b"\x55" * 8, b"\x80" + b"\x00" * 7,
                     b"\x00" * 7 + b"\x01", b"\xf0" + b"\xff" * 7]),
    min_size=1, max_size=16).map(b"".join))
@SETTINGS
def test_bitmap_runs_match_bit_by_bit(bitmap):
    assert bitmap_runs(bitmap) == naive_runs(bitmap)


def test_bitmap_runs_edges():
    assert bitmap_runs(bytes(4096)) == []
    assert bitmap_runs(FULL_LEAF_4K) == [(0, 32768)]
    assert bitmap_runs(b"\x01" + bytes(7)) == [(0, 1)]
    assert bitmap_runs(bytes(7) + b"\x80") == [(63, 64)]
    assert bitmap_runs(bytes(7) + b"\x80\x01" + bytes(7)) == [(63, 65)]


def test_coalesce_ranges():
    triples = [(0x3000, 0x1000, 0), (0x1000, 0x1000, 0), (0x2000, 0x1000, 0),
               (0x200000, 0x200000, 9), (0x400000, 0x1000, 0), (0x3800, 0x1000, 0)]
    assert coalesce_ranges(triples) == [
        (0x200000, 0x200000, 9),
        (0x1000, 0x3800, 0),
        (0x400000, 0x1000, 0),
    ]
    assert all(type(r) is tuple for r in coalesce_ranges(triples))


# --- the leaf fast path (_scan_bitmap) against a bit-by-bit decoder ----------

_ALT = int.from_bytes(b"\x55" * 512, "little")  # 0101...: a run of 1 and a hole of 1


def _alternating(nbits: int, steps: List[int], ones: bool) -> int:
    """``nbits`` bits of runs and holes, alternately, of the lengths in
    ``steps`` (cycled); the first is a run when ``ones``."""
    value, at, i = 0, 0, 0
    while at < nbits:
        step = steps[i % len(steps)]
        if ones:
            value |= ((1 << min(step, nbits - at)) - 1) << at
        at, ones, i = at + step, not ones, i + 1
    return value


def _bench_leaf(seed: int) -> bytes:
    """A leaf like bench_radix.py's fragmented tree: runs and holes of 1-1023."""
    rnd = random.Random(seed)
    return _alternating(32768, [rnd.randint(1, 1023) for _ in range(128)], True).to_bytes(
        4096, "little")


class Bitmap(bytes):
    """Generated bitmap bytes that print as the recipe, not as kilobytes."""

    recipe: str = ""

    def __repr__(self) -> str:
        return f"Bitmap({len(self)} bytes: {self.recipe})"


@st.composite
def adversarial_bitmaps(draw, nbytes=None, max_bytes: int = 1024):
    """Little-endian bitmaps built from segments that stress _scan_bitmap.

    Segments: holes, runs, alternating bits (a boundary at every bit), raw
    random bytes, single bits at both edges of 64-bit words, runs that
    straddle a word boundary by a few bits, fragmented stretches (runs and
    holes of 1-1023 bits, or of 1-17: boundaries at any bit, several in one
    byte, in adjacent bytes, on byte and word edges) and aligned full words;
    long ones cross 4 KiB pages.
    Whatever the segments leave uncovered is zero, or ones when ``fill``.
    """
    if nbytes is None:
        nbytes = draw(st.integers(0, max_bytes))
    nbits = nbytes * 8
    length = st.one_of(st.integers(1, 70), st.integers(1, 2100), st.integers(1, max(1, nbits)))
    kinds = st.sampled_from(["hole", "run", "alt", "random", "word-edges", "straddle",
                             "fragmented", "full-words"])
    segments = draw(st.lists(st.tuples(kinds, length), max_size=24))
    value, pos, recipe = 0, 0, []
    for kind, n in segments:
        n = min(n, nbits - pos)
        if n <= 0:
            break
        recipe.append(f"{kind}@{pos}+{n}")
        if kind == "run":
            piece = (1 << n) - 1
        elif kind == "alt":
            piece = (_ALT >> draw(st.integers(0, 1))) & ((1 << n) - 1) if n <= 4096 else 0
        elif kind == "random":
            piece = int.from_bytes(draw(st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8)),
                                   "little") & ((1 << n) - 1)
        elif kind == "word-edges":  # bits 0 and 63 of every word the segment touches
            piece = sum(1 << (i - pos) for i in range(pos, pos + n) if i % 64 in (0, 63))
        elif kind == "fragmented":  # the bench's leaves: runs and holes of 1-1023 bits
            steps = draw(st.lists(st.integers(1, 1023) | st.integers(1, 17), min_size=1,
                                  max_size=64))
            piece = _alternating(n, steps, draw(st.booleans()))
        elif kind == "full-words":  # whole 64-bit words of ones, aligned, with gaps
            piece = sum(((1 << 64) - 1) << (i - pos) for i in range(-(-pos // 64) * 64,
                        pos + n - 63, 64) if draw(st.booleans()))
        elif kind == "straddle":  # ones from k bits below a word boundary to j above it
            edge = -(-(pos + 1) // 64) * 64
            lo = max(pos, edge - draw(st.integers(1, 63)))
            hi = min(pos + n, edge + draw(st.integers(0, 64)))
            piece = ((1 << (hi - lo)) - 1) << (lo - pos) if hi > lo else 0
        else:
            piece = 0
        value |= piece << pos
        pos += n
    if pos < nbits and draw(st.booleans()):  # "fill": the rest is all ones
        value |= ((1 << (nbits - pos)) - 1) << pos
        recipe.append(f"run@{pos}+{nbits - pos}")
    bitmap = Bitmap(value.to_bytes(nbytes, "little"))
    bitmap.recipe = ", ".join(recipe) or "zeros"
    return bitmap


def bit_by_bit_ranges(bitmap: bytes, base: int, shift: int, order: int):
    """The reference: (start, size, order) runs of set bits, one bit at a time."""
    return [(base + (lo << shift), (hi - lo) << shift, order) for lo, hi in naive_runs(bitmap)]


SPECIAL_BITMAPS = [
    b"",
    bytes(4096),
    b"\xff" * 4096,
    b"\x55" * 4096,  # alternating: 16384 runs of one bit
    b"\xaa" * 4096,
    (b"\x01" + bytes(6) + b"\x80") * 512,  # single bits at both word edges
    bytes(7) + b"\x80\x01" + bytes(4087),  # a run of 2 across a word boundary
    b"\xfe" + b"\xff" * 4094 + b"\x7f",  # one run from bit 1 to the second-to-last bit
    bytes([0x3c, 0xc3, 0x81, 0x7e] * 1024),  # runs and holes inside and across bytes
    (b"\xff" * 8 + bytes(8)) * 256,  # full words, one in two
    b"\x01" + bytes(4095),  # a single bit at bit 0
    bytes(7) + b"\x80" + bytes(4088),  # a single bit at bit 63
    bytes(4095) + b"\x80",  # a single bit at the last bit
    (bytes(3) + b"\xf0" + b"\xff" * 7 + b"\x0f" + bytes(4)) * 256,  # runs across words
    bytes([0xf0, 0x0f] * 2048),  # a run of 8 across every byte edge: start and end bytes adjacent
    bytes([0x0f, 0xf0] * 2048),  # a hole of 8 across every byte edge
    bytes([0x80, 0x01, 0x00] * 1365 + [0]),  # runs of 2 across byte edges, holes of 14 bits
    (b"\xff" + bytes(1)) * 2048,  # byte-aligned runs and holes of 8
    b"\xfe" + b"\xff" * 4095,  # a run from bit 1 to the end (carried out)
    _bench_leaf(1),
    _bench_leaf(2),
]


@pytest.mark.parametrize("bitmap", SPECIAL_BITMAPS, ids=range(len(SPECIAL_BITMAPS)))
def test_scan_bitmap_special_patterns(bitmap):
    assert bitmap_runs(bitmap) == naive_runs(bitmap)


@given(adversarial_bitmaps())
@SETTINGS
def test_bitmap_runs_adversarial(bitmap):
    assert bitmap_runs(bitmap) == naive_runs(bitmap)


def leaf_scales():
    """(base, shift, order) as a leaf scales its bits: every order of a 4 KiB
    page, and the unscaled bit positions of bitmap_runs()."""
    return st.just((0, 0, 0)) | st.integers(0, 52).flatmap(
        lambda order: st.tuples(st.integers(0, 3).map(lambda k: k << (12 + order + 15)),
                                st.just(12 + order), st.just(order)))


@given(
    adversarial_bitmaps(max_bytes=3 * 4096),
    st.lists(st.integers(0, 3 * 4096), max_size=6),
    leaf_scales(),
)
@SETTINGS
@example(Bitmap(bytes([0xf0, 0x0f] * 8)), [3, 8], (0, 12, 0))
@example(Bitmap(b"\xff" * 16), [8], (1 << 30, 30, 18))
def test_scan_bitmap_carries_runs_across_pieces(bitmap, cuts, scale):
    # Cut the bitmap anywhere (empty pieces, odd bytes, mid-word), scan the
    # pieces in order carrying the open run: the ranges must be those of the
    # whole bitmap, scaled like a leaf's, with runs joined across the cuts.
    base, shift, order = scale
    cuts = sorted({0, len(bitmap), *(c for c in cuts if c <= len(bitmap))})
    out: List[Tuple[int, int, int]] = []
    open_run = -1
    for lo, hi in zip(cuts, cuts[1:]):
        open_run = _scan_bitmap(bitmap[lo:hi], base + (lo << (shift + 3)), open_run, out,
                                shift, order)
    if open_run >= 0:
        out.append((open_run, base + (len(bitmap) << (shift + 3)) - open_run, order))
    assert out == bit_by_bit_ranges(bitmap, base, shift, order)
    assert all(type(r) is tuple for r in out)


def leaf_pages(enc: RadixTreeEncoder, pages: Dict[int, bytes], keys: List[int], byteorder: str):
    """The phys of the leaf holding each key, by following the table entries."""
    out = []
    for key in keys:
        table = enc.root
        for index in RadixGeometry().indices(key)[:-1]:
            table = int.from_bytes(pages[table][8 * index:8 * index + 8], byteorder)
        out.append(table)
    return out


def table_edge_keys(order: int) -> List[int]:
    """Leaf keys 511 of one level-1 table and 0, 1 and 3 of the next (2 is
    absent): runs must join across the leaf and table boundaries, and stop at
    the missing leaf. Order 28 has no table before its first (the key below
    it is of order 29), so it gets leaves 0, 1, 3."""
    key0 = (1 << (52 - order)) | ((1 << 24) if order < 28 else 0)  # leaf 0 of an L1 table
    keys = [key0 - (1 << 15), key0, key0 + (1 << 15), key0 + (3 << 15)]
    return keys[1:] if order == 28 else keys


def top_keys(order: int) -> List[int]:
    """The last leaf keys of an order (leaves 508, 509 and 511 of its last
    level-1 table): the last one ends at phys 2^64."""
    last = (1 << (53 - order)) - (1 << 15)
    return [last - (3 << 15), last - (2 << 15), last]


def leaf_tree(order: int, leaf_keys: List[int], bitmaps: List[bytes], byteorder: str):
    """A tree whose leaves at ``leaf_keys`` hold ``bitmaps`` (little-endian bit
    order), with the target's byte order; returns the encoder and the pages."""
    assert {k.bit_length() for k in leaf_keys} == {53 - order}
    enc = RadixTreeEncoder()
    for key in leaf_keys:
        enc.add((key << (12 + order)) & ((1 << 64) - 1), order)
    pages = enc.pages(byteorder)
    for leaf, bitmap in zip(leaf_pages(enc, pages, leaf_keys, byteorder), bitmaps):
        words = array("Q", bitmap)
        if byteorder == "big":
            words.byteswap()
        pages[leaf] = words.tobytes()
    return enc, pages


@given(
    st.integers(0, 28),
    st.lists(adversarial_bitmaps(nbytes=4096), min_size=4, max_size=4),
    st.sampled_from(["little", "big"]),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Full leaves across the table boundary, closed by an empty leaf, reopened,
# and closed again by the missing leaf 2.
@example(0, [FULL_LEAF_4K, bytes(4096), FULL_LEAF_4K, b"\x0f" + bytes(4095)], "little")
@example(9, [FULL_LEAF_4K] * 4, "big")
@example(3, [bytes(4095) + b"\x80", b"\x01" + bytes(4095), b"\x55" * 4096, b"\xaa" * 4096],
         "little")
@example(28, [b"\xff" * 4096, b"\xfe" + b"\xff" * 4095, b"\xff" * 4095 + b"\x7f", bytes(4096)],
         "big")
def test_walk_fast_path_matches_bit_by_bit(order, bitmaps, byteorder):
    leaf_keys = table_edge_keys(order)
    bitmaps = bitmaps[len(bitmaps) - len(leaf_keys):]
    shift = 12 + order
    enc, pages = leaf_tree(order, leaf_keys, bitmaps, byteorder)
    expected: List[Tuple[int, int, int]] = []
    for key, bitmap in zip(leaf_keys, bitmaps):
        for phys, size, o in bit_by_bit_ranges(bitmap, (key << shift) - (1 << 64), shift, order):
            if expected and expected[-1][0] + expected[-1][1] == phys:
                expected[-1] = (expected[-1][0], expected[-1][1] + size, o)
            else:
                expected.append((phys, size, o))
    read = reader(pages)
    res = walk_radix_tree(read, enc.root, byteorder=byteorder, keys=True)
    assert list(res.ranges) == expected
    assert res.keys == tuple(
        key + bit for key, bitmap in zip(leaf_keys, bitmaps)
        for lo, hi in naive_runs(bitmap) for bit in range(lo, hi)
    )
    assert res.histogram == ({order: len(res.keys)} if res.keys else {})
    assert read.counts == {p: 1 for p in pages}


def test_read_page_may_return_a_bytearray():
    enc = RadixTreeEncoder()
    enc.add_blocks(0x1_0000_0000, 5, 0)
    enc.add_blocks(0x1_0000_9000, 40000, 0)
    pages = enc.pages()
    want = walk_radix_tree(pages.__getitem__, enc.root)
    assert walk_radix_tree(lambda p: bytearray(pages[p]), enc.root) == want
    assert want.ranges == ((0x1_0000_0000, 0x5000, 0), (0x1_0000_9000, 40000 << 12, 0))
    for wrap in (bytearray, memoryview):
        assert bitmap_runs(wrap(b"\x0f\xf0")) == [(0, 4), (12, 16)]


# --- walking trees built by the independent encoder -------------------------


def test_walk_worked_examples():
    blocks = [(p, o) for p, o, _, _ in WORKED_EXAMPLES]
    enc, pages = build(blocks)
    read = reader(pages)
    res = walk_radix_tree(read, enc.root, keys=True)
    # Larger orders first, ascending address within an order.
    assert res.ranges == (
        (0x4000_0000, GiB, 18),
        (0x2_4000_0000, 2 << 20, 9),
        (0x1_0000_0000, 0x1000, 0),
        (0x1_2345_6000, 0x1000, 0),
    )
    assert res.keys == (0x400000001, 0x80000001200, 0x10000000100000, 0x10000000123456)
    assert res.histogram == {18: 1, 9: 1, 0: 2}
    assert res.total_blocks == 4
    assert res.total_bytes == GiB + (2 << 20) + 0x2000
    assert res.bytes_by_order() == {18: GiB, 9: 2 << 20, 0: 0x2000}
    assert res.of_order(0) == res.ranges[2:]
    assert set(res.tree_pages) == set(enc.alloc.allocated)
    assert res.tree_pages[0] == enc.root
    assert read.counts == {p: 1 for p in pages}
    assert res.footprint().total == len(pages) * 4096


def test_walk_empty_tree():
    enc, pages = build([])
    res = walk_radix_tree(pages.__getitem__, enc.root, keys=True)
    assert res == PreservedMemory(ranges=(), tree_pages=(enc.root,), histogram={}, keys=())


def test_full_leaves_coalesce_across_leaves_and_tables():
    # 1 GiB + 4 KiB of order-0 pages starting 4 KiB before a 64 GiB (L2) boundary.
    enc = RadixTreeEncoder()
    start = 64 * GiB - 0x1000
    enc.add_blocks(start, (GiB >> 12) + 1, 0)
    pages = enc.pages()
    read = reader(pages)
    res = walk_radix_tree(read, enc.root)
    assert res.ranges == ((start, GiB + 0x1000, 0),)
    assert res.histogram == {0: (GiB >> 12) + 1}
    assert list(res.tree_pages) == enc.alloc.allocated
    assert sum(read.counts.values()) == len(pages)


def runs_strategy(max_index_bits: int = 24):
    """Disjoint runs (phys, count, order) of naturally aligned blocks."""
    run = st.tuples(
        st.sampled_from([0, 0, 0, 1, 2, 9, 10, 11, 18, 19]),
        st.integers(0, (1 << max_index_bits) - 1),
        st.one_of(st.integers(1, 40), st.integers(32700, 33000)),
    )

    def disjoint(raw):
        taken: List[Range] = []
        out = []
        for order, index, count in raw:
            shift = 12 + order
            count = min(count, max(1, (1 << 18) >> order))  # keep runs below 1 TiB
            r = Range((index >> order) << shift, count << shift)
            if r.end <= 1 << 52 and not any(r.overlaps(t) for t in taken):
                taken.append(r)
                out.append((r.base, count, order))
        return out

    return st.lists(run, max_size=12).map(disjoint)


@given(runs_strategy(), st.sampled_from([0x7000_0000, 0x1_0000_0000_0000]))
@SETTINGS
def test_round_trip_random_sets(runs, node_base):
    enc = RadixTreeEncoder(node_base=node_base)
    keys = set()
    for phys, count, order in sorted(runs, key=lambda r: encode_key(r[0], r[2])):
        first = enc.add_blocks(phys, count, order)
        keys.update(range(first, first + count))
    pages = enc.pages()
    read = reader(pages)
    res = walk_radix_tree(read, enc.root, keys=True)
    # Same keys, in the kernel's walk order (ascending key).
    assert res.keys == tuple(sorted(keys))
    assert {decode_key(k) for k in res.keys} == {
        (phys + (i << (12 + order)), order) for phys, count, order in runs for i in range(count)
    }
    assert list(res.ranges) == expected_ranges(runs)
    # Keys were added in ascending order, so allocation order is visit order.
    assert list(res.tree_pages) == enc.alloc.allocated
    assert read.counts == {p: 1 for p in pages}
    orders = sorted({o for *_, o in runs}, reverse=True)
    assert res.histogram == {o: sum(c for _, c, oo in runs if oo == o) for o in orders}


@given(runs_strategy(), st.randoms(use_true_random=False))
@SETTINGS
def test_insertion_order_does_not_matter(runs, rnd):
    rnd.shuffle(runs)
    enc = RadixTreeEncoder()
    for phys, count, order in runs:
        enc.add_blocks(phys, count, order)
    res = walk_radix_tree(enc.pages().__getitem__, enc.root)
    assert list(res.ranges) == expected_ranges(runs)
    assert sorted(res.tree_pages) == sorted(enc.alloc.allocated)


@pytest.mark.parametrize("page_shift", [14, 16])
@given(data=st.data())
@settings(max_examples=15, deadline=None)
def test_other_page_sizes(page_shift, data):
    orders = data.draw(st.lists(st.sampled_from([0, 1, 5, 13]), max_size=6))
    runs, taken = [], RangeSet()
    for order in orders:
        shift = page_shift + order
        index = data.draw(st.integers(0, 1 << 20))
        count = data.draw(st.integers(1, 3))
        r = Range(index << shift, count << shift)
        if not taken.overlaps(r):
            taken = taken | RangeSet([r])
            runs.append((r.base, count, order))
    enc = RadixTreeEncoder(page_shift=page_shift)
    for phys, count, order in runs:
        enc.add_blocks(phys, count, order)
    res = walk_radix_tree(enc.pages().__getitem__, enc.root, page_shift=page_shift, keys=True)
    assert list(res.ranges) == expected_ranges(runs, page_shift)
    assert {decode_key(k, page_shift) for k in res.keys} == {
        (p + (i << (page_shift + o)), o) for p, c, o in runs for i in range(c)
    }


def test_big_endian_target():
    blocks = [(p, o) for p, o, _, _ in WORKED_EXAMPLES] + [(0x1_0000_1000, 0)]
    enc, _ = build(blocks)
    little = walk_radix_tree(enc.pages().__getitem__, enc.root, keys=True)
    big = walk_radix_tree(enc.pages("big").__getitem__, enc.root, keys=True, byteorder="big")
    assert big == little


def test_huge_orders_under_the_zero_prefix():
    # Orders >= 38 put the order bit inside the leaf of root[0] -> ... -> L1[0],
    # so one leaf holds keys of several orders.
    blocks = [(0, 52), (1 << 63, 51), (0, 40), (1 << 62, 40), (3 << 62, 50)]
    enc, pages = build(sorted(blocks, key=lambda b: encode_key(*b)))
    res = walk_radix_tree(pages.__getitem__, enc.root, keys=True)
    assert [decode_key(k) for k in res.keys] == sorted(blocks, key=lambda b: (-b[1], b[0]))
    assert {(phys, order) for phys, _, order in res.ranges} == set(blocks)


# --- the native scanner (kho_inspect/_radixscan.c) against the Python one ----
#
# The tests above run whichever scanner is in use (the native one when it is
# built, unless KHO_INSPECT_PURE=1); these run both on the same input.

needs_native = pytest.mark.skipif(
    radix._NATIVE is None, reason="kho_inspect._radixscan is not built (no C compiler)")


@contextmanager
def scanner(native: bool) -> Iterator[None]:
    """Run the walks with the native scanner or the pure-Python one."""
    saved = radix._native
    radix._native = radix._NATIVE if native else None
    try:
        yield
    finally:
        radix._native = saved


def both(fn):
    """``fn()`` with the Python scanner, then with the native one: each
    result, or the exception's type and message, and the pages read."""
    results = []
    for native in (False, True):
        with scanner(native):
            try:
                results.append(fn())
            except CorruptTreeError as exc:
                results.append((type(exc.__cause__), str(exc)))
    return results


def c_compiler() -> Optional[str]:
    cc = sysconfig.get_config_var("CC")
    return shutil.which(shlex.split(cc)[0]) if cc else None


def test_native_scanner_is_built_and_in_use():
    """Where a C compiler is (CI), the package must have built the scanner
    and use it: a silent fall-back to pure Python fails here."""
    if radix._NATIVE is None and not c_compiler():
        pytest.skip("no C compiler: pure Python is the scanner in use")
    assert radix._NATIVE is not None, (
        "kho_inspect._radixscan is not built although a C compiler is there: "
        "reinstall with `pip install -e .` and read the build log")
    if os.environ.get("KHO_INSPECT_PURE", "") not in ("", "0"):
        assert radix._native is None
        return
    assert radix._native is radix._NATIVE
    source = Path(radix.__file__).with_name("_radixscan.c")
    if source.exists():  # a checkout: the module must not predate its source
        assert Path(radix._NATIVE.__file__).stat().st_mtime >= source.stat().st_mtime, (
            f"{radix._NATIVE.__file__} is older than {source}: rebuild with `pip install -e .`")


@pytest.mark.parametrize("value, native", [(None, True), ("", True), ("0", True),
                                           ("1", False), ("yes", False)])
def test_kho_inspect_pure_selects_the_python_scanner(value, native):
    env = {k: v for k, v in os.environ.items() if k != "KHO_INSPECT_PURE"}
    if value is not None:
        env["KHO_INSPECT_PURE"] = value
    code = "import kho_inspect.radix as r; print(r._native is not None)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(native and radix._NATIVE is not None)


def open_runs():
    """The run carried into a piece: none, or one that began before it (or,
    for the wide path, anywhere)."""
    return st.sampled_from(["none", "before", "any"])


@needs_native
@given(
    adversarial_bitmaps(max_bytes=3 * 4096),
    st.lists(st.integers(0, 3 * 4096), max_size=6),
    leaf_scales() | st.tuples(st.integers(0, 1 << 66), st.integers(0, 70), st.integers(0, 60)),
    open_runs(),
    st.integers(0, 1 << 70),
)
@SETTINGS
@example(Bitmap(b"\xff" * 16), [8], (2**64 - (16 << 15), 12, 0), "before", 5)  # ends at 2^64
@example(Bitmap(b"\xf0\x0f"), [1], (0, 0, 0), "any", 3)  # a run carried from beyond base
def test_native_scan_bitmap_matches_python(bitmap, cuts, scale, carried, seed):
    # The same pieces through both scanners, carrying the open run: the same
    # ranges (same values, plain tuples) and the same run carried out, in
    # the u64 range and beyond it (base and shift of any size).
    base, shift, order = scale
    cuts = sorted({0, len(bitmap), *(c for c in cuts if c <= len(bitmap))})
    first = {"none": -1, "before": base - seed % (base + 1), "any": seed}[carried]
    outs = []
    for scan in (radix._scan_bitmap_py, radix._NATIVE.scan_bitmap):
        out: List[Tuple[int, int, int]] = []
        open_run, carried_out = first, []
        for lo, hi in zip(cuts, cuts[1:]):
            open_run = scan(bitmap[lo:hi], base + (lo << (shift + 3)), open_run, out, shift, order)
            carried_out.append(open_run)
        assert all(type(r) is tuple for r in out)
        outs.append((out, carried_out))
    assert outs[0] == outs[1]


@needs_native
@given(adversarial_bitmaps(max_bytes=64))
@SETTINGS
def test_native_scan_bitmap_takes_any_buffer_and_sink(bitmap):
    expected: List[Tuple[int, int, int]] = []
    radix._scan_bitmap_py(bytes(bitmap), 0x1000, -1, expected, 3, 7)
    for wrap in (bytearray, memoryview):
        out = ListSink()
        radix._NATIVE.scan_bitmap(wrap(bitmap), 0x1000, -1, out, 3, 7)
        assert out.items == expected


class ListSink:
    """Not a list: something with an append method, as the Python scanner takes."""

    def __init__(self) -> None:
        self.items: List[Tuple[int, int, int]] = []

    def append(self, item: Tuple[int, int, int]) -> None:
        self.items.append(item)


@needs_native
@given(
    st.integers(0, 28),
    st.sampled_from([table_edge_keys, top_keys]),
    st.lists(adversarial_bitmaps(nbytes=4096), min_size=4, max_size=4),
    st.sampled_from(["little", "big"]),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(0, top_keys, [FULL_LEAF_4K] * 4, "little")  # a run up to 2^64
@example(28, top_keys, [bytes(4096), FULL_LEAF_4K, b"\xfe" + b"\xff" * 4095, bytes(4096)], "big")
def test_native_walk_matches_python_on_adversarial_leaves(order, where, bitmaps, byteorder):
    leaf_keys = where(order)
    bitmaps = bitmaps[len(bitmaps) - len(leaf_keys):]
    enc, pages = leaf_tree(order, leaf_keys, bitmaps, byteorder)
    reads = [reader(pages), reader(pages)]
    it = iter(reads)
    py, native = both(lambda: walk_radix_tree(next(it), enc.root, byteorder=byteorder, keys=True))
    assert native == py
    assert reads[0].counts == reads[1].counts == {p: 1 for p in pages}
    shift = 12 + order
    blocks = sum(hi - lo for bitmap in bitmaps for lo, hi in naive_runs(bitmap))
    assert native.histogram == ({order: blocks} if blocks else {})
    assert sum(size for _, size, _ in native.ranges) == blocks << shift
    assert all(type(r) is tuple for r in native.ranges)


@needs_native
@given(runs_strategy(), st.sampled_from([0x7000_0000, 0x1_0000_0000_0000]),
       st.sampled_from([(), ((0, 52), (1 << 62, 40), (3 << 62, 50), (1 << 63, 29))]))
@SETTINGS
def test_native_walk_matches_python_on_random_sets(runs, node_base, huge):
    # Runs of orders 0..19, with or without blocks under the zero prefix
    # (orders 29 and up, in the mixed-order leaf the histogram counts apart).
    enc = RadixTreeEncoder(node_base=node_base)
    for phys, order in huge:
        enc.add(phys, order)
    for phys, count, order in runs:
        enc.add_blocks(phys, count, order)
    pages = enc.pages()
    py, native = both(lambda: walk_radix_tree(pages.__getitem__, enc.root, keys=True))
    assert native == py
    assert list(native.histogram) == sorted(native.histogram, reverse=True)


@needs_native
@pytest.mark.parametrize("page_shift", [14, 16])
def test_native_walk_matches_python_on_other_page_sizes(page_shift):
    enc = RadixTreeEncoder(page_shift=page_shift)
    for phys, count, order in [(0, 5, 0), (1 << 40, 70000, 0), (1 << 44, 3, 5), (1 << 45, 9, 13)]:
        enc.add_blocks(phys << (page_shift - 12), count, order)
    pages = enc.pages()
    py, native = both(lambda: walk_radix_tree(pages.__getitem__, enc.root, keys=True,
                                              page_shift=page_shift))
    assert native == py
    assert native.total_blocks == 5 + 70000 + 3 + 9


CORRUPTIONS = {
    "misaligned leaf pointer": lambda pages, t: poke_u64(pages, t[4] + 8 * 32, t[5] + 8),
    "leaf outside RAM": lambda pages, t: poke_u64(pages, t[4] + 8 * 32, 0x9000_0000),
    "shared leaf": lambda pages, t: poke_u64(pages, t[4] + 8 * 40, t[5]),
    "unreadable leaf": lambda pages, t: pages.pop(t[5]),
    "short leaf": lambda pages, t: pages.__setitem__(t[5], pages[t[5]][:100]),
    "long leaf": lambda pages, t: pages.__setitem__(t[5], pages[t[5]] + bytes(8)),
}


@needs_native
@pytest.mark.parametrize("ram", [None, RangeSet([Range(0x7000_0000, 0x10_0000)]),
                                 lambda phys: 0x7000_0000 <= phys < 0x7010_0000],
                         ids=["no RAM", "RangeSet", "callable"])
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_native_walk_fails_as_python_does(corruption, ram):
    # The same error, naming the same path, after reading the same pages once.
    _, pages, tables = example_tree()
    for i in range(33, 40):  # more leaves in the same table, before and after the bad one
        poke_u64(pages, tables[4] + 8 * i, 0x7008_0000 + (i << 12))
        pages[0x7008_0000 + (i << 12)] = b"\x0f" * 4096
    CORRUPTIONS[corruption](pages, tables)
    reads = [reader(pages), reader(pages)]
    it = iter(reads)
    py, native = both(lambda: walk_radix_tree(next(it), tables[0], ram=ram))
    assert native == py
    assert reads[0].counts == reads[1].counts
    assert all(n == 1 for n in reads[1].counts.values())


# --- corruption -------------------------------------------------------------

# The worked-example tree: root[2] -> L4[0] -> L3[0] -> L2[0] -> L1[32] leads to
# the leaf of 0x1_0000_0000.
L1_PATH = "root[2] -> L4[0] -> L3[0] -> L2[0] -> L1[32]"


def example_tree():
    enc, pages = build([(0x1_0000_0000, 0), (0x2_4000_0000, 9)])
    g = RadixGeometry()
    tables = [enc.root]
    for index in g.indices(encode_key(0x1_0000_0000, 0))[:-1]:
        entry = int.from_bytes(pages[tables[-1]][8 * index:8 * index + 8], "little")
        tables.append(entry)
    return enc, pages, tables  # tables: root, L4, L3, L2, L1, leaf


def corrupt_walk(pages, root, **kwargs):
    read = reader(pages)
    with pytest.raises(CorruptTreeError) as info:
        walk_radix_tree(read, root, **kwargs)
    assert all(n == 1 for n in read.counts.values()), "a page was read twice"
    return str(info.value)


def test_misaligned_entry_names_the_path():
    enc, pages, tables = example_tree()
    poke_u64(pages, tables[4] + 8 * 32, 0x1234)
    assert corrupt_walk(pages, enc.root) == (
        f"{L1_PATH}: entry 0x1234 is not page aligned{TREE_ADVICE}"
    )


def test_cycle_back_to_root():
    enc, pages, tables = example_tree()
    poke_u64(pages, tables[4] + 8 * 32, enc.root)
    msg = corrupt_walk(pages, enc.root)
    assert msg.startswith(f"{L1_PATH}: entry {enc.root:#x} points to a page already visited "
                          "at the root;")


def test_cycle_at_a_table_level():
    enc, pages, tables = example_tree()
    poke_u64(pages, tables[1] + 8 * 7, tables[1])  # L4[7] -> the L4 table itself
    msg = corrupt_walk(pages, enc.root)
    assert msg.startswith(f"root[2] -> L4[7]: entry {tables[1]:#x} points to a page already "
                          "visited at root[2];")


def test_shared_leaf():
    enc, pages, tables = example_tree()
    poke_u64(pages, tables[4] + 8 * 40, tables[5])
    msg = corrupt_walk(pages, enc.root)
    assert msg.startswith(f"root[2] -> L4[0] -> L3[0] -> L2[0] -> L1[40]: entry {tables[5]:#x} "
                          f"points to a page already visited at {L1_PATH};")


@pytest.mark.parametrize("as_callable", [False, True])
def test_entry_outside_ram(as_callable):
    enc, pages, tables = example_tree()
    ram = RangeSet([Range(0x7000_0000, 0x10_0000)])
    res = walk_radix_tree(pages.__getitem__, enc.root, ram=ram)
    assert res.total_blocks == 2
    poke_u64(pages, tables[4] + 8 * 32, 0x9000_0000)
    pages[0x9000_0000] = FULL_LEAF_4K
    check = (lambda p: p in ram) if as_callable else ram
    assert corrupt_walk(pages, enc.root, ram=check) == (
        f"{L1_PATH}: entry 0x90000000 points outside RAM{TREE_ADVICE}"
    )


def test_root_outside_ram_or_misaligned():
    enc, pages, _ = example_tree()
    assert corrupt_walk(pages, enc.root, ram=RangeSet([Range(0, 0x1000)])).startswith(
        f"root: table address {enc.root:#x} points outside RAM;"
    )
    assert corrupt_walk(pages, enc.root + 8).startswith(
        f"root: table address {enc.root + 8:#x} is not page aligned;"
    )


def test_over_wide_key():
    enc, pages, tables = example_tree()
    poke_u64(pages, enc.root + 8 * 4, tables[1])
    assert corrupt_walk(pages, enc.root) == (
        f"root[4]: entry {tables[1]:#x} would hold keys wider than 53 bits{TREE_ADVICE}"
    )


def test_key_zero():
    enc, pages = build([(1 << 62, 40)])  # key 0x1004: in the leaf holding key 0
    leaf = enc.alloc.allocated[-1]
    poke_u64(pages, leaf, 1 | int.from_bytes(pages[leaf][:8], "little"))
    assert corrupt_walk(pages, enc.root) == (
        "root[0] -> L4[0] -> L3[0] -> L2[0] -> L1[0] -> bit[0]: key 0 is not a valid radix key"
        + TREE_ADVICE
    )


def test_read_failure_names_the_path_and_keeps_the_cause():
    enc, pages, tables = example_tree()
    del pages[tables[5]]
    with pytest.raises(CorruptTreeError) as info:
        walk_radix_tree(pages.__getitem__, enc.root)
    assert str(info.value).startswith(f"{L1_PATH}: cannot read page {tables[5]:#x} (")
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(CorruptTreeError, match=r"^root: cannot read page 0x1000 \("):
        walk_radix_tree(pages.__getitem__, 0x1000)


def test_short_read():
    enc, pages, tables = example_tree()
    pages[tables[3]] = pages[tables[3]][:100]
    with pytest.raises(CorruptTreeError, match=re.escape(
            f"root[2] -> L4[0] -> L3[0]: read of page {tables[3]:#x} returned 100 bytes")):
        walk_radix_tree(pages.__getitem__, enc.root)


def test_corrupt_tree_error_is_one_sentence():
    enc, pages, tables = example_tree()
    poke_u64(pages, tables[4] + 8 * 32, 0x1234)
    msg = corrupt_walk(pages, enc.root)
    assert "\n" not in msg and msg.count(". ") == 0


# --- kho-v1 chunk lists -----------------------------------------------------


def blocks_of(runs):
    return [(p + (i << (12 + o)), o) for p, count, o in runs for i in range(count)]


@given(runs_strategy(max_index_bits=22).map(
    lambda runs: [(p, min(c, 70), o) for p, c, o in runs]))
@SETTINGS
def test_khoser_round_trip_matches_the_radix_walk(runs):
    blocks = blocks_of(runs)
    image = encode_khoser(blocks)
    read = reader(image.pages)
    res = decode_khoser_chunks(read, image.first)
    assert list(res.ranges) == expected_ranges(runs)
    assert res.tree_pages == tuple(image.chunks)
    assert res.bitmaps == tuple(image.bitmaps)
    assert read.counts == {p: 1 for p in image.pages}
    enc, pages = build(blocks)
    radix = walk_radix_tree(pages.__getitem__, enc.root)
    assert (res.ranges, res.histogram) == (radix.ranges, radix.histogram)


def test_khoser_many_bitmaps_span_chunks():
    # 300 bitmaps of order 0 (one block each, 16 MiB apart) need two chunks.
    blocks = [(i << 24, 0) for i in range(300)] + [(0x4000_0000, 18)]
    image = encode_khoser(blocks)
    res = decode_khoser_chunks(image.pages.__getitem__, image.first)
    assert len(image.chunks) == 3 and len(res.bitmaps) == 301
    assert res.histogram == {18: 1, 0: 300}
    assert res.ranges[0] == (0x4000_0000, GiB, 18)
    assert res.footprint().total == 3 * 4096 + 301 * 512


def test_khoser_empty():
    res = decode_khoser_chunks(lambda p: pytest.fail("no read expected"), 0)
    assert (res.ranges, res.tree_pages, res.histogram) == ((), (), {})


CHUNK_ADVICE = (
    "; the chunk list is corrupt or was freed, snapshot it in the kernel that finalized it"
)


def khoser_error(image, **kwargs) -> str:
    with pytest.raises(CorruptTreeError) as info:
        decode_khoser_chunks(image.pages.__getitem__, image.first, **kwargs)
    return str(info.value)


def two_chunk_image():
    return encode_khoser([(0x1000, 0), (0x4000_0000, 18)])


def test_khoser_cycle():
    image = two_chunk_image()
    first, second = image.chunks
    poke_u64(image.pages, second, first)
    assert khoser_error(image) == (
        f"chunk[1].hdr.next: chunk address {first:#x} loops back to chunk[0]{CHUNK_ADVICE}"
    )


def test_khoser_num_elms_over_capacity():
    image = two_chunk_image()
    page = bytearray(image.pages[image.chunks[0]])
    page[12:16] = (256).to_bytes(4, "little")
    image.pages[image.chunks[0]] = bytes(page)
    assert khoser_error(image) == f"chunk[0]: num_elms 256 exceeds the capacity 255{CHUNK_ADVICE}"


def test_khoser_misaligned_pointers():
    image = two_chunk_image()
    poke_u64(image.pages, image.chunks[0], image.chunks[1] + 0x10)
    assert khoser_error(image).startswith(
        f"chunk[0].hdr.next: chunk address {image.chunks[1] + 0x10:#x} is not page aligned;"
    )
    image = two_chunk_image()
    poke_u64(image.pages, image.chunks[0] + 24, image.bitmaps[0] + 8)
    assert khoser_error(image).startswith(
        f"chunk[0].bitmaps[0]: bitmap_phys {image.bitmaps[0] + 8:#x} is not 512-byte aligned;"
    )
    image = two_chunk_image()
    poke_u64(image.pages, image.chunks[1] + 16, 0x1000_0000)  # order 18: 4 TiB multiples
    assert khoser_error(image).startswith(
        "chunk[1].bitmaps[0]: phys_start 0x10000000 is not a multiple of 0x40000000000;"
    )


def test_khoser_outside_ram_duplicate_and_unreadable():
    image = two_chunk_image()
    ram = RangeSet([Range(image.chunks[0], 0x2000)])
    assert khoser_error(image, ram=ram).startswith(
        f"chunk[0].bitmaps[0]: bitmap_phys {image.bitmaps[0]:#x} points outside RAM;"
    )
    image = two_chunk_image()
    poke_u64(image.pages, image.chunks[1] + 24, image.bitmaps[0])
    assert khoser_error(image).startswith(
        f"chunk[1].bitmaps[0]: bitmap_phys {image.bitmaps[0]:#x} is already used by "
        "chunk[0].bitmaps[0];"
    )
    image = encode_khoser([(0x1000, 0), (0x800_0000, 0)])  # two order-0 bitmaps, one chunk
    poke_u64(image.pages, image.chunks[0] + 32, 0)  # bitmaps[1].phys_start = bitmaps[0]'s
    assert khoser_error(image).startswith(
        "chunk[0].bitmaps[1]: phys_start 0x0 of order 0 repeats chunk[0].bitmaps[0];"
    )
    image = two_chunk_image()
    del image.pages[image.chunks[1]]
    with pytest.raises(CorruptTreeError) as info:
        decode_khoser_chunks(image.pages.__getitem__, image.first)
    assert str(info.value).startswith(
        f"chunk[0].hdr.next: cannot read page {image.chunks[1]:#x} ("
    )
    assert isinstance(info.value.__cause__, KeyError)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Independent KHO encoders (test helper)
--------------------------------------

Builds the two preserved-memory structures a kernel hands over, written from
the ABI text in docs/kernel/radix.md (#constants, #node-layout, #key-encoding,
#kho-v1-chunk-list) and deliberately sharing no
code with :mod:`kho_inspect.radix`, so that the walker is checked against a
second reading of the ABI:

* :class:`RadixTreeEncoder` does what ``kho_radix_add_key()`` does: it
  allocates the root at creation (``kho_radix_init_tree()``), then, for each
  key, the missing tables and the leaf on its path, top down, from a simple
  bump allocator.
* :func:`encode_khoser` serialises ``(phys, order)`` blocks into the kho-v1
  chunk list the way ``kho_mem_serialize()`` did in 6.16.

Both produce ``{page_phys: bytes(page_size)}`` that a test serves as memory.
"""

import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

FULL_LEAF_4K = b"\xff" * 4096


class PageAllocator:
    """Hands out consecutive pages from ``base`` and remembers the order."""

    def __init__(self, base: int, page_size: int = 4096) -> None:
        assert base % page_size == 0
        self.next = base
        self.page_size = page_size
        self.allocated: List[int] = []

    def alloc(self) -> int:
        phys = self.next
        self.next += self.page_size
        self.allocated.append(phys)
        return phys


class RadixTreeEncoder:
    """A KHO radix tree under construction (abi header, kho-v2 and later).

    Each table is ``u64 table[PAGE_SIZE / 8]`` of child physical addresses;
    each leaf a bitmap of ``PAGE_SIZE * 8`` bits; the key of a block is its
    order bit ``1 << (64 - PAGE_SHIFT - order)`` OR'ed with
    ``phys >> (PAGE_SHIFT + order)``.
    """

    def __init__(self, node_base: int = 0x7000_0000, page_shift: int = 12) -> None:
        self.page_shift = page_shift
        self.page_size = 2**page_shift
        self.entries = self.page_size // 8
        self.leaf_bits = self.page_size * 8
        self.key_bits = 64 - page_shift + 1
        # Tables needed above the leaf: enough 'entries'-way levels to cover
        # the key bits that the leaf does not.
        above = self.key_bits - (page_shift + 3)
        self.table_levels = (above + (page_shift - 3) - 1) // (page_shift - 3)
        self.alloc = PageAllocator(node_base, self.page_size)
        self.tables: Dict[int, List[int]] = {}
        self.leaves: Dict[int, int] = {}
        self.root = self._new_table()
        self.keys: List[int] = []

    def _new_table(self) -> int:
        phys = self.alloc.alloc()
        self.tables[phys] = [0] * self.entries
        return phys

    def key(self, phys: int, order: int) -> int:
        """The key of an order-``order`` block at ``phys`` (docs/kernel/radix.md#key-encoding)."""
        block = 2 ** (self.page_shift + order)
        assert phys % block == 0, "blocks are naturally aligned"
        order_bit = 2 ** (64 - self.page_shift - order)
        return order_bit + phys // block

    def _slot(self, key: int, level: int) -> int:
        # Level `level` (table_levels = root .. 1) indexes the key by the
        # table-sized digit just above the leaf bits and the lower levels.
        low_bits = (self.page_shift + 3) + (self.page_shift - 3) * (level - 1)
        return (key // 2**low_bits) % self.entries

    def _leaf_of(self, key: int) -> int:
        """The leaf page for ``key``, allocating its path top down."""
        table = self.root
        for level in range(self.table_levels, 0, -1):
            slot = self._slot(key, level)
            child = self.tables[table][slot]
            if child == 0:
                if level == 1:
                    child = self.alloc.alloc()
                    self.leaves[child] = 0
                else:
                    child = self._new_table()
                self.tables[table][slot] = child
            table = child
        return table

    def add(self, phys: int, order: int) -> int:
        """Preserve one block; return its key."""
        return self.add_blocks(phys, 1, order)

    def add_blocks(self, phys: int, count: int, order: int) -> int:
        """Preserve ``count`` consecutive order-``order`` blocks from ``phys``.

        Whole leaves are filled with one mask, so 512 GiB of pages costs one
        step per 128 MiB. Returns the first key.
        """
        first = self.key(phys, order)
        assert (first + count - 1).bit_length() == first.bit_length(), "one order only"
        key, stop = first, first + count
        while key < stop:
            lo = key % self.leaf_bits
            n = min(stop - key, self.leaf_bits - lo)
            leaf = self._leaf_of(key)
            self.leaves[leaf] |= (2**n - 1) << lo
            key += n
        return first

    def pages(self, byteorder: str = "little") -> Dict[int, bytes]:
        """Every allocated page as bytes, keyed by physical address."""
        fmt = ("<" if byteorder == "little" else ">") + f"{self.entries}Q"
        full = 2**self.leaf_bits - 1
        ones = b"\xff" * self.page_size
        out: Dict[int, bytes] = {}
        for phys in self.alloc.allocated:
            if phys in self.tables:
                out[phys] = struct.pack(fmt, *self.tables[phys])
            elif self.leaves[phys] == full:
                out[phys] = ones if self.page_size != 4096 else FULL_LEAF_4K
            else:
                out[phys] = _bitmap_bytes(self.leaves[phys], self.page_size, byteorder)
        return out


def _bitmap_bytes(bits: int, size: int, byteorder: str) -> bytes:
    # DECLARE_BITMAP: bit i lives in unsigned long i / 64 at bit i % 64, so a
    # little-endian target stores the bitmap as one little-endian integer.
    little = bits.to_bytes(size, "little")
    if byteorder == "little":
        return little
    words = struct.unpack(f"<{size // 8}Q", little)
    return struct.pack(f">{size // 8}Q", *words)


def poke_u64(pages: Dict[int, bytes], addr: int, value: int, page_size: int = 4096) -> None:
    """Overwrite the u64 at physical ``addr`` in a page dict (for corruption tests)."""
    base = addr - addr % page_size
    page = bytearray(pages[base])
    struct.pack_into("<Q", page, addr - base, value)
    pages[base] = bytes(page)


# --- kho-v1 -----------------------------------------------------------------

KHOSER_BITMAP_BYTES = 512  # struct kho_mem_phys_bits: DECLARE_BITMAP(preserve, 512 * 8)
KHOSER_BITMAP_BITS = KHOSER_BITMAP_BYTES * 8


@dataclass
class KhoserImage:
    """A serialised kho-v1 chunk list."""

    first: int  # the preserved-memory-map value (0 when empty)
    pages: Dict[int, bytes] = field(default_factory=dict)
    chunks: List[int] = field(default_factory=list)
    bitmaps: List[int] = field(default_factory=list)


def encode_khoser(
    blocks: Iterable[Tuple[int, int]],
    chunk_base: int = 0x6000_0000,
    bitmap_base: int = 0x6800_0000,
    page_shift: int = 12,
) -> KhoserImage:
    """Serialise blocks like 6.16 ``kho_mem_serialize()``.

    Orders ascending; per order, bitmaps by ascending index
    ``(pfn >> order) / 4096``; a new chunk for every order and whenever one is
    full. Bitmaps are packed eight to a page like kmalloc-512 objects.
    """
    page_size = 2**page_shift
    per_order: Dict[int, Dict[int, int]] = {}
    for phys, order in blocks:
        n = phys >> (page_shift + order)
        assert n << (page_shift + order) == phys
        bitmaps = per_order.setdefault(order, {})
        bitmaps[n // KHOSER_BITMAP_BITS] = bitmaps.get(n // KHOSER_BITMAP_BITS, 0) | (
            1 << (n % KHOSER_BITMAP_BITS)
        )
    image = KhoserImage(first=0)
    bitmap_pages: Dict[int, bytearray] = {}
    chunk_alloc = PageAllocator(chunk_base, page_size)
    capacity = (page_size - 16) // 16
    chunks: List[Tuple[int, int, List[Tuple[int, int]]]] = []  # (phys, order, elements)
    for order in sorted(per_order):
        chunks.append((chunk_alloc.alloc(), order, []))
        for idx in sorted(per_order[order]):
            if len(chunks[-1][2]) == capacity:
                chunks.append((chunk_alloc.alloc(), order, []))
            slot = bitmap_base + len(image.bitmaps) * KHOSER_BITMAP_BYTES
            image.bitmaps.append(slot)
            page = bitmap_pages.setdefault(slot - slot % page_size, bytearray(page_size))
            off = slot % page_size
            page[off:off + KHOSER_BITMAP_BYTES] = per_order[order][idx].to_bytes(
                KHOSER_BITMAP_BYTES, "little"
            )
            phys_start = (idx * KHOSER_BITMAP_BITS) << (order + page_shift)
            chunks[-1][2].append((phys_start, slot))
    for i, (phys, order, elements) in enumerate(chunks):
        next_phys = chunks[i + 1][0] if i + 1 < len(chunks) else 0
        page = bytearray(page_size)
        struct.pack_into("<QII", page, 0, next_phys, order, len(elements))
        for j, (phys_start, bitmap_phys) in enumerate(elements):
            struct.pack_into("<QQ", page, 16 + 16 * j, phys_start, bitmap_phys)
        image.pages[phys] = bytes(page)
        image.chunks.append(phys)
    image.pages.update({p: bytes(b) for p, b in bitmap_pages.items()})
    image.first = chunks[0][0] if chunks else 0
    return image

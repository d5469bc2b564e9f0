# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Physical ranges
---------------

The ``kho_inspect.ranges`` module provides the one range type of the package,
:class:`Range` (a half-open ``[base, base + size)`` interval of physical
addresses), and :class:`RangeSet`, a sorted, merged, immutable set of ranges
with the interval operations every check needs: union, intersection,
subtraction, overlap and cover. :class:`RangeMap` maps disjoint ranges to
values (a memblock region to its flags and node) and finds the value at an
address by binary search.

All operations are linear in the number of ranges, never in the number of
bytes described.
"""

from bisect import bisect_right
from dataclasses import dataclass
from typing import (
    Any,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

__all__ = ("Range", "RangeSet", "RangeMap", "merge_ranges")

V = TypeVar("V")


@dataclass(frozen=True, order=True)
class Range:
    """A half-open physical address range ``[base, base + size)``."""

    base: int
    size: int

    def __post_init__(self) -> None:
        if self.base < 0 or self.size < 0:
            raise ValueError(f"negative range: base={self.base:#x} size={self.size:#x}")

    @classmethod
    def from_bounds(cls, start: int, end: int) -> "Range":
        """Build a range from ``start`` (inclusive) and ``end`` (exclusive)."""
        return cls(start, end - start)

    @property
    def end(self) -> int:
        """The first address after the range."""
        return self.base + self.size

    @property
    def last(self) -> int:
        """The last address inside the range (the kernel's inclusive end)."""
        return self.base + self.size - 1

    def __bool__(self) -> bool:
        return self.size > 0

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, int) and self.base <= addr < self.end

    def overlaps(self, other: "Range") -> bool:
        """Whether the two ranges share at least one byte (never, if one is empty)."""
        return self.size > 0 and other.size > 0 and self.base < other.end and other.base < self.end

    def covers(self, other: "Range") -> bool:
        """Whether every byte of ``other`` lies inside this range (an empty one does)."""
        return not other or (self.base <= other.base and other.end <= self.end)

    def intersect(self, other: "Range") -> "Range":
        """The common part of two ranges (an empty range if none)."""
        start = max(self.base, other.base)
        end = min(self.end, other.end)
        return Range(start, max(0, end - start))

    def is_aligned(self, alignment: int) -> bool:
        """Whether base and size are both multiples of ``alignment``."""
        return self.base % alignment == 0 and self.size % alignment == 0

    def to_json(self) -> Dict[str, int]:
        return {"base": self.base, "size": self.size}

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Range":
        return cls(int(obj["base"]), int(obj["size"]))

    def __str__(self) -> str:
        return f"[{self.base:#x}-{self.last:#x}]"


RangeLike = Union[Range, Tuple[int, int]]


def _as_range(r: RangeLike) -> Range:
    return r if isinstance(r, Range) else Range(r[0], r[1])


def merge_ranges(ranges: Iterable[RangeLike]) -> List[Range]:
    """Sort ranges and merge those that overlap or touch; drop empty ones."""
    out: List[Range] = []
    for r in sorted(_as_range(r) for r in ranges):
        if not r:
            continue
        if out and r.base <= out[-1].end:
            last = out[-1]
            if r.end > last.end:
                out[-1] = Range.from_bounds(last.base, r.end)
        else:
            out.append(r)
    return out


class RangeSet:
    """An immutable set of physical addresses kept as sorted, merged ranges."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[RangeLike] = ()) -> None:
        self._ranges: Tuple[Range, ...] = tuple(merge_ranges(ranges))

    @classmethod
    def _from_merged(cls, ranges: Sequence[Range]) -> "RangeSet":
        rs = cls.__new__(cls)
        rs._ranges = tuple(ranges)
        return rs

    @property
    def ranges(self) -> Tuple[Range, ...]:
        return self._ranges

    def __iter__(self) -> Iterator[Range]:
        return iter(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self._ranges == other._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        return "RangeSet([" + ", ".join(str(r) for r in self._ranges) + "])"

    @property
    def total(self) -> int:
        """Number of bytes in the set."""
        return sum(r.size for r in self._ranges)

    def union(self, other: "RangeSet") -> "RangeSet":
        return RangeSet(self._ranges + other._ranges)

    __or__ = union

    def intersect(self, other: "RangeSet") -> "RangeSet":
        """Addresses in both sets (a two-pointer sweep)."""
        out: List[Range] = []
        a, b = self._ranges, other._ranges
        i = j = 0
        while i < len(a) and j < len(b):
            r = a[i].intersect(b[j])
            if r:
                out.append(r)
            if a[i].end <= b[j].end:
                i += 1
            else:
                j += 1
        return RangeSet._from_merged(out)

    __and__ = intersect

    def subtract(self, other: "RangeSet") -> "RangeSet":
        """Addresses in this set and not in ``other``."""
        out: List[Range] = []
        b = other._ranges
        j = 0
        for r in self._ranges:
            start = r.base
            while j < len(b) and b[j].end <= start:
                j += 1
            k = j
            while k < len(b) and b[k].base < r.end:
                if b[k].base > start:
                    out.append(Range.from_bounds(start, b[k].base))
                start = max(start, b[k].end)
                k += 1
            if start < r.end:
                out.append(Range.from_bounds(start, r.end))
        return RangeSet._from_merged(out)

    __sub__ = subtract

    def overlaps(self, other: Union["RangeSet", Range]) -> bool:
        """Whether any address lies in both."""
        if isinstance(other, Range):
            other = RangeSet([other])
        return bool(self.intersect(other))

    def covers(self, other: Union["RangeSet", Range]) -> bool:
        """Whether every address of ``other`` is in this set."""
        if isinstance(other, Range):
            other = RangeSet([other])
        return not other.subtract(self)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, int):
            return False
        lo, hi = 0, len(self._ranges)
        while lo < hi:
            mid = (lo + hi) // 2
            r = self._ranges[mid]
            if addr < r.base:
                hi = mid
            elif addr >= r.end:
                lo = mid + 1
            else:
                return True
        return False

    def overlapping(self, ranges: Iterable[Range]) -> List[Range]:
        """The given ranges that overlap this set, in input order."""
        return [r for r in ranges if self.overlaps(r)]

    def to_json(self) -> List[Dict[str, int]]:
        return [r.to_json() for r in self._ranges]

    @classmethod
    def from_json(cls, objs: Iterable[Dict[str, Any]]) -> "RangeSet":
        return cls(Range.from_json(o) for o in objs)


class RangeMap(Generic[V]):
    """An immutable map from disjoint ranges to values, sorted by address.

    Unlike a :class:`RangeSet`, neighbours are never merged: each range keeps
    its own value (a memblock region and its flags, a scratch area and its
    node). Empty ranges are dropped.

    :raises ValueError: two ranges overlap.
    """

    __slots__ = ("_items", "_bases")

    def __init__(self, items: Iterable[Tuple[RangeLike, V]] = ()) -> None:
        pairs = sorted(((_as_range(r), v) for r, v in items), key=lambda item: item[0])
        self._items: Tuple[Tuple[Range, V], ...] = tuple((r, v) for r, v in pairs if r)
        for (a, _), (b, _) in zip(self._items, self._items[1:]):
            if b.base < a.end:
                raise ValueError(f"{a} and {b} overlap")
        self._bases = [r.base for r, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Tuple[Range, V]]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeMap) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return "RangeMap({" + ", ".join(f"{r}: {v!r}" for r, v in self._items) + "})"

    def find(self, addr: int) -> Optional[Tuple[Range, V]]:
        """The range holding ``addr`` and its value, or ``None``."""
        i = bisect_right(self._bases, addr) - 1
        if i >= 0 and addr < self._items[i][0].end:
            return self._items[i]
        return None

    def get(self, addr: int, default: Optional[V] = None) -> Optional[V]:
        """The value at ``addr``, or ``default``."""
        found = self.find(addr)
        return default if found is None else found[1]

    def __getitem__(self, addr: int) -> V:
        found = self.find(addr)
        if found is None:
            raise KeyError(addr)
        return found[1]

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, int) and self.find(addr) is not None

    def overlapping(self, rng: Range) -> List[Tuple[Range, V]]:
        """The parts of the map inside ``rng``: each range clipped to it, with its value."""
        i = max(0, bisect_right(self._bases, rng.base) - 1)
        out = []
        while i < len(self._items) and self._items[i][0].base < rng.end:
            piece = self._items[i][0].intersect(rng)
            if piece:
                out.append((piece, self._items[i][1]))
            i += 1
        return out

    def range_set(self) -> RangeSet:
        """Every address that has a value."""
        return RangeSet(r for r, _ in self._items)

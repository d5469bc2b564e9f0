# SPDX-License-Identifier: LGPL-2.1-or-later
"""The interval algebra of kho_inspect.ranges against a brute-force oracle.

Addresses live in a small universe so that every range set can also be
written out as a Python set of addresses; each operation must agree with the
set operation and return a canonical (sorted, merged) result.
"""

import json
from typing import Iterable, List, Set

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kho_inspect.ranges import Range, RangeMap, RangeSet, merge_ranges

UNIVERSE = 64
addresses = st.integers(min_value=0, max_value=UNIVERSE)
ranges = st.builds(lambda a, b: Range.from_bounds(min(a, b), max(a, b)), addresses, addresses)
range_lists = st.lists(ranges, max_size=8)
range_sets = range_lists.map(RangeSet)
probes = st.integers(min_value=-2, max_value=UNIVERSE + 2)


def points(rs: Iterable[Range]) -> Set[int]:
    out: Set[int] = set()
    for r in rs:
        out.update(range(r.base, r.end))
    return out


def assert_canonical(rs: List[Range]) -> None:
    assert all(r.size > 0 for r in rs)
    assert all(a.end < b.base for a, b in zip(rs, rs[1:])), rs  # sorted, apart, not touching


# --- Range ------------------------------------------------------------------


@given(ranges, ranges)
def test_range_overlap_cover_intersect(a, b):
    pa, pb = points([a]), points([b])
    assert a.overlaps(b) == bool(pa & pb) == b.overlaps(a)
    assert a.covers(b) == (pb <= pa)
    assert points([a.intersect(b)]) == pa & pb


@given(ranges, probes)
def test_range_contains_and_bounds(r, addr):
    assert (addr in r) == (addr in points([r]))
    assert Range.from_bounds(r.base, r.end) == r
    if r:
        assert r.last == r.end - 1 and r.last in r and r.end not in r


def test_negative_range_is_refused():
    with pytest.raises(ValueError):
        Range(-1, 4)
    with pytest.raises(ValueError):
        Range(4, -1)


def test_range_str_uses_the_inclusive_end():
    assert str(Range(0x1000, 0x1000)) == "[0x1000-0x1fff]"


# --- merge and RangeSet -----------------------------------------------------


@given(range_lists)
def test_merge_is_canonical_and_keeps_every_address(rs):
    merged = merge_ranges(rs)
    assert_canonical(merged)
    assert points(merged) == points(rs)
    assert merge_ranges([(r.base, r.size) for r in rs]) == merged  # tuples are ranges too


@given(range_lists)
def test_rangeset_is_its_merged_ranges(rs):
    s = RangeSet(rs)
    assert list(s) == merge_ranges(rs)
    assert s.total == len(points(rs)) and len(s) == len(merge_ranges(rs))
    assert bool(s) == bool(points(rs))
    assert RangeSet(reversed(rs)) == s and hash(RangeSet(reversed(rs))) == hash(s)


@given(range_sets, range_sets)
def test_union_intersect_subtract_are_set_operations(a, b):
    pa, pb = points(a), points(b)
    for result, expected in ((a | b, pa | pb), (a & b, pa & pb), (a - b, pa - pb)):
        assert points(result) == expected
        assert_canonical(list(result))
    assert a.union(b) == a | b and a.intersect(b) == a & b and a.subtract(b) == a - b


@given(range_sets, range_sets)
def test_algebraic_identities(a, b):
    assert (a - b) | (a & b) == a
    assert not ((a - b) & b)
    assert a & b == b & a and a | b == b | a
    assert a - a == RangeSet() and a & a == a


@given(range_sets, st.one_of(range_sets, ranges))
def test_overlaps_and_covers(a, b):
    pb = points(b if isinstance(b, RangeSet) else [b])
    assert a.overlaps(b) == bool(points(a) & pb)
    assert a.covers(b) == (pb <= points(a))


@given(range_sets, probes)
def test_membership_by_binary_search(s, addr):
    assert (addr in s) == (addr in points(s))
    assert "x" not in s


@given(range_sets, range_lists)
def test_overlapping_keeps_input_order(s, rs):
    assert s.overlapping(rs) == [r for r in rs if points([r]) & points(s)]


@given(range_sets)
def test_json_round_trip(s):
    assert RangeSet.from_json(json.loads(json.dumps(s.to_json()))) == s
    for r in s:
        assert Range.from_json(json.loads(json.dumps(r.to_json()))) == r


# --- RangeMap ---------------------------------------------------------------

cuts = st.lists(addresses, min_size=2, max_size=10, unique=True).map(sorted)


@st.composite
def range_maps(draw):
    """Disjoint ranges between sorted cut points (some skipped: holes), with values."""
    points_ = draw(cuts)
    items = [(Range.from_bounds(a, b), draw(st.integers(0, 3)))
             for a, b in zip(points_, points_[1:]) if draw(st.booleans())]
    return items


@given(range_maps(), probes)
def test_rangemap_find_matches_brute_force(items, addr):
    m = RangeMap(reversed(items))  # any input order
    hits = [(r, v) for r, v in items if addr in r]
    assert m.find(addr) == (hits[0] if hits else None)
    assert m.get(addr, -1) == (hits[0][1] if hits else -1)
    assert (addr in m) == bool(hits)
    if not hits:
        with pytest.raises(KeyError):
            m[addr]


@given(range_maps(), ranges)
def test_rangemap_overlapping_clips_to_the_query(items, query):
    m = RangeMap(items)
    pieces = m.overlapping(query)
    assert all(a.end <= b.base for (a, _), (b, _) in zip(pieces, pieces[1:]))
    expected = {a: v for r, v in items for a in range(r.base, r.end) if a in query}
    assert {a: v for r, v in pieces for a in range(r.base, r.end)} == expected
    assert all(query.covers(r) for r, _ in pieces)
    assert m.range_set() == RangeSet(r for r, _ in items)
    assert list(m) == sorted(items, key=lambda item: item[0]) and len(m) == len(items)


def test_rangemap_refuses_overlaps_and_drops_empty_ranges():
    with pytest.raises(ValueError, match="overlap"):
        RangeMap([(Range(0, 10), "a"), (Range(5, 10), "b")])
    m = RangeMap([(Range(0, 10), "a"), (Range(10, 0), "empty"), (Range(10, 5), "b")])
    assert [v for _, v in m] == ["a", "b"] and m[10] == "b" and m[9] == "a"

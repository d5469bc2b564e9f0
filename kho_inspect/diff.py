# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Snapshot diff
-------------

The ``kho_inspect.diff`` module compares two
:class:`~kho_inspect.model.snapshot.Snapshot` values, typically the one kernel
N saved before ``kexec -e`` and the one of kernel N+1, and says what changed:

* the kernels themselves (release, command line, KHO state, kexec count,
  generation);
* the scratch areas (``kho_scratch[]`` by index: moved, resized, added,
  removed) and the bytes of each scratch class;
* preserved memory: what each kernel preserves for the next one, what each
  received, and across the handover what N preserved against what N+1
  received;
* the memblock regions of each type (by base: added, removed, resized,
  flags or node changed);
* gigantic hugetlb pages (by physical address: origin, state, node).

Everything is pure: two snapshots in, a :class:`SnapshotDiff` out. Rendering
is in :mod:`kho_inspect.views.diff`.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Tuple

from kho_inspect.model.base import document
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "DIFF_SCHEMA",
    "DIFF_VERSION",
    "HANDOVER",
    "FieldChange",
    "ItemChange",
    "RangeDiff",
    "SnapshotDiff",
    "diff_document",
    "diff_snapshots",
)

DIFF_SCHEMA = "kho-inspect/diff"
DIFF_VERSION = 1

KINDS = ("added", "removed", "changed")

HANDOVER = "handover"
"""The range comparison across the kexec: what the first kernel preserved
against what the second received (not a change of either)."""


@dataclass(frozen=True)
class FieldChange:
    """A scalar that differs between the two kernels (``kexec_count``: 1 -> 2)."""

    name: str
    before: Any
    after: Any

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "before": self.before, "after": self.after}


@dataclass(frozen=True)
class ItemChange:
    """One object added, removed or changed (a region, an area, a page).

    :param section: ``"memblock.reserved"``, ``"scratch areas"``, ``"gigantic pages"``.
    :param kind: ``"added"``, ``"removed"`` or ``"changed"``.
    :param key: what identifies it in its section (an index, a base address).
    :param before: its attributes in the first snapshot (``None`` if added).
    :param after: its attributes in the second (``None`` if removed).
    """

    section: str
    kind: str
    key: Any
    before: Optional[Mapping[str, Any]] = None
    after: Optional[Mapping[str, Any]] = None

    @property
    def changed(self) -> Tuple[str, ...]:
        """The attributes that differ (all of them for an added or removed item)."""
        a, b = self.before or {}, self.after or {}
        return tuple(k for k in {**a, **b} if a.get(k) != b.get(k))

    def to_json(self) -> Dict[str, Any]:
        return {"section": self.section, "kind": self.kind, "key": self.key,
                "before": None if self.before is None else dict(self.before),
                "after": None if self.after is None else dict(self.after),
                "changed": list(self.changed)}


@dataclass(frozen=True)
class RangeDiff:
    """A set of physical ranges in both kernels: what was added and removed.

    :param name: ``"scratch original"``, ``"preserved out"``, ``"handover"``...
    :param before: the first kernel's set, ``None`` when it has none.
    :param after: the second kernel's set, ``None`` when it has none.
    :param missing: why one side is ``None``.
    :param labels: what ``before``/``after`` are: the kernels' names, or
        ``("preserved by N", "received by N+1")`` for the handover.
    """

    name: str
    before: Optional[RangeSet]
    after: Optional[RangeSet]
    missing: Optional[str] = None
    labels: Tuple[str, str] = ("before", "after")

    @property
    def compared(self) -> bool:
        return self.before is not None and self.after is not None

    @property
    def added(self) -> RangeSet:
        return self.after - self.before if self.compared else RangeSet()

    @property
    def removed(self) -> RangeSet:
        return self.before - self.after if self.compared else RangeSet()

    @property
    def same(self) -> bool:
        return self.compared and self.before == self.after

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "labels": list(self.labels),
            "before_bytes": None if self.before is None else self.before.total,
            "after_bytes": None if self.after is None else self.after.total,
            "added": self.added.to_json(),
            "removed": self.removed.to_json(),
            "same": self.same,
            "missing": self.missing,
        }


@dataclass(frozen=True)
class SnapshotDiff:
    """What changed from ``before`` to ``after``.

    :param names: how to call the two kernels (``("A", "B")``, or their releases).
    :param fields: the kernel-level values that differ.
    :param ranges: the range sets compared (scratch classes, preserved memory).
    :param items: regions, scratch areas and gigantic pages added, removed or changed.
    :param notes: sections that could not be compared, and why.
    """

    names: Tuple[str, str]
    fields: Tuple[FieldChange, ...]
    ranges: Tuple[RangeDiff, ...]
    items: Tuple[ItemChange, ...]
    notes: Tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing differs (the handover comparison aside)."""
        return not self.fields and not self.items and all(
            r.same or not r.compared for r in self.ranges if r.name != HANDOVER)

    def section(self, name: str) -> Tuple[ItemChange, ...]:
        return tuple(i for i in self.items if i.section == name)

    def counts(self) -> Dict[str, Dict[str, int]]:
        """section -> kind -> number of items."""
        out: Dict[str, Dict[str, int]] = {}
        for item in self.items:
            kinds = out.setdefault(item.section, {k: 0 for k in KINDS})
            kinds[item.kind] += 1
        return out

    def to_json(self) -> Dict[str, Any]:
        return {
            "names": list(self.names),
            "empty": self.empty,
            "fields": [f.to_json() for f in self.fields],
            "ranges": [r.to_json() for r in self.ranges],
            "items": [i.to_json() for i in self.items],
            "counts": self.counts(),
            "notes": list(self.notes),
        }


def diff_document(diff: SnapshotDiff) -> Dict[str, Any]:
    """The JSON document ``kho-inspect diff --json`` prints."""
    return document(DIFF_SCHEMA, DIFF_VERSION, {"diff": diff.to_json()})


# --- kernel-level fields ---------------------------------------------------------


def _fields(snap: Snapshot) -> Dict[str, Any]:
    status, activation = snap.status, snap.activation
    return {
        "release": snap.release,
        "arch": snap.arch,
        "command_line": snap.command_line,
        "generation": snap.generation,
        "kho": None if activation is None else activation.state,
        "kho_boot": snap.kho_boot,
        "kexec_count": None if status is None else status.kexec_count,
        "previous_release": None if status is None else status.previous_release,
        "compatible": None if status is None else status.compatible,
        "memory_nodes": list(snap.memory_nodes),
        "taken_from": snap.taken_from,
    }


def _field_changes(a: Snapshot, b: Snapshot) -> List[FieldChange]:
    fa, fb = _fields(a), _fields(b)
    return [FieldChange(name, fa[name], fb[name]) for name in fa if fa[name] != fb[name]]


# --- items ----------------------------------------------------------------------------


Attrs = Dict[str, Any]


def _items(section: str, before: Mapping[Hashable, Attrs], after: Mapping[Hashable, Attrs],
           order: Callable[[Any], Any]) -> List[ItemChange]:
    out = []
    for key in sorted(set(before) | set(after), key=order):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        kind = "added" if a is None else "removed" if b is None else "changed"
        out.append(ItemChange(section, kind, key, a, b))
    return out


def _regions(snap: Snapshot, name: str) -> Optional[Dict[Hashable, Attrs]]:
    if snap.memblock is None or name not in snap.memblock.types:
        return None
    return {r.base: {"base": r.base, "size": r.size, "flags": list(r.flags), "nid": r.nid}
            for r in snap.memblock.types[name].regions}


def _areas(snap: Snapshot) -> Optional[Dict[Hashable, Attrs]]:
    if snap.scratch is None:
        return None
    return {a.index: {"role": a.role, "addr": a.addr, "size": a.size, "node": a.node}
            for a in snap.scratch.areas}


def _pages(snap: Snapshot) -> Optional[Dict[Hashable, Attrs]]:
    if snap.hugetlb is None:
        return None
    return {p.phys: {"phys": p.phys, "size": p.size, "node": p.node, "origin": p.origin,
                     "state": p.state} for p in snap.hugetlb.pages}


_ITEM_SECTIONS: Tuple[Tuple[str, str, Callable[[Snapshot], Optional[Dict[Hashable, Attrs]]]],
                      ...] = (
    ("scratch areas", "scratch", _areas),
    ("memblock.memory", "memblock", lambda s: _regions(s, "memory")),
    ("memblock.reserved", "memblock", lambda s: _regions(s, "reserved")),
    ("gigantic pages", "hugetlb", _pages),
)


def _missing(snap: Snapshot, name: str, field: str) -> str:
    return f"{name}: {snap.why_missing(field)}"


# --- ranges -----------------------------------------------------------------------------


def _class(snap: Snapshot, name: str) -> Optional[RangeSet]:
    return None if snap.scratch is None else snap.scratch.classes.get(name)


def _preserved(snap: Snapshot, field: str) -> Optional[RangeSet]:
    report = getattr(snap, field)
    return None if report is None else report.range_set()


def _tree(snap: Snapshot) -> Optional[RangeSet]:
    report = snap.preserved_out
    if report is None:
        return None
    page = 1 << report.page_shift
    return RangeSet(Range(p, page) for p in report.tree_pages)


def _range_pair(name: str, a: Snapshot, b: Snapshot, field: str,
                get: Callable[[Snapshot], Optional[RangeSet]],
                labels: Tuple[str, str]) -> RangeDiff:
    before, after = get(a), get(b)
    missing = None
    if before is None:
        missing = f"{labels[0]} has none: {a.why_missing(field)}"
    elif after is None:
        missing = f"{labels[1]} has none: {b.why_missing(field)}"
    return RangeDiff(name, before, after, missing, labels)


def _handover(a: Snapshot, b: Snapshot, names: Tuple[str, str]) -> RangeDiff:
    before, after = _preserved(a, "preserved_out"), _preserved(b, "preserved_in")
    missing = None
    if before is None:
        missing = f"{names[0]} has no outgoing preserved memory: {a.why_missing('preserved_out')}"
    elif after is None:
        missing = f"{names[1]} has no incoming preserved memory: {b.why_missing('preserved_in')}"
    return RangeDiff(HANDOVER, before, after, missing,
                     (f"preserved by {names[0]}", f"received by {names[1]}"))


def _ranges(a: Snapshot, b: Snapshot, names: Tuple[str, str]) -> List[RangeDiff]:
    out = [_range_pair(f"scratch {c}", a, b, "scratch", lambda s, c=c: _class(s, c), names)
           for c in ("original", "extended", "unpreserved")]
    out.append(_range_pair("preserved out", a, b, "preserved_out",
                           lambda s: _preserved(s, "preserved_out"), names))
    out.append(_range_pair("radix tree pages", a, b, "preserved_out", _tree, names))
    out.append(_range_pair("preserved in", a, b, "preserved_in",
                           lambda s: _preserved(s, "preserved_in"), names))
    out.append(_handover(a, b, names))
    return out


# --- entry point -------------------------------------------------------------------------


def _order(key: Any) -> Any:
    return (key is None, key)


def diff_snapshots(before: Snapshot, after: Snapshot,
                   names: Iterable[str] = ("A", "B")) -> SnapshotDiff:
    """What changed from ``before`` to ``after`` (pure).

    :param names: how to call the two kernels in notes and labels.
    """
    pair = tuple(names)
    assert len(pair) == 2, "two names"
    items: List[ItemChange] = []
    notes: List[str] = []
    for section, field, get in _ITEM_SECTIONS:
        a, b = get(before), get(after)
        if a is None or b is None:
            for snap, name, side in ((before, pair[0], a), (after, pair[1], b)):
                if side is None:
                    notes.append(f"{section} not compared: {_missing(snap, name, field)}")
            continue
        items += _items(section, a, b, _order)
    ranges = _ranges(before, after, (pair[0], pair[1]))
    notes += [r.missing for r in ranges if r.missing and r.name == HANDOVER]
    return SnapshotDiff(
        names=(pair[0], pair[1]),
        fields=tuple(_field_changes(before, after)),
        ranges=tuple(ranges),
        items=tuple(items),
        notes=tuple(dict.fromkeys(notes)),
    )

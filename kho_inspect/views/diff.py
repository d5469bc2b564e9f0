# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Diff view
---------

Sections of ``kho-inspect diff``: the kernel-level values that differ, the
range sets compared (scratch classes, preserved memory, the handover) with
what was added and removed, and one table per kind of object (scratch areas,
memblock regions, gigantic pages) listing what was added, removed or changed.
"""

from typing import Any, List, Mapping, Optional, Sequence

from kho_inspect.diff import ItemChange, RangeDiff, SnapshotDiff
from kho_inspect.ranges import RangeSet
from kho_inspect.render import Section, human_size

__all__ = ("MAX_RANGES", "sections")

MAX_RANGES = 40
"""Ranges listed per added/removed set in text (the JSON has all of them)."""


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "|".join(str(v) for v in value) or "NONE"
    return str(value)


def _fields(diff: SnapshotDiff) -> Section:
    a, b = diff.names
    rows = [(f.name, _value(f.before), _value(f.after)) for f in diff.fields]
    notes = [] if rows else ["The two kernels agree on release, command line, KHO state, "
                             "kexec count and generation."]
    return Section("Kernels", ("field", a, b), rows, notes)


def _bytes(rs: Optional[RangeSet]) -> str:
    return "-" if rs is None else human_size(rs.total)


def _delta(rs: RangeSet) -> str:
    return "-" if not rs else f"{human_size(rs.total)} in {len(rs)}"


def _range_summary(diff: SnapshotDiff) -> Section:
    rows = []
    notes = []
    for r in diff.ranges:
        if not r.compared:
            notes.append(f"{r.name}: {r.missing}.")
            continue
        name = r.name if r.labels == diff.names else f"{r.name} ({r.labels[0]} -> {r.labels[1]})"
        rows.append((name, _bytes(r.before), _bytes(r.after), _delta(r.added),
                     _delta(r.removed), "same" if r.same else "changed"))
    a, b = diff.names
    return Section("Physical ranges", ("set", a, b, "added", "removed", "state"), rows, notes)


def _range_rows(r: RangeDiff) -> List[Sequence[Any]]:
    rows: List[Sequence[Any]] = []
    for change, rs, label in (("added", r.added, r.labels[1]), ("removed", r.removed,
                                                                r.labels[0])):
        for rng in rs.ranges[:MAX_RANGES]:
            rows.append((r.name, change, f"{rng.base:#x}", f"{rng.last:#x}",
                         human_size(rng.size), label))
        if len(rs) > MAX_RANGES:
            rows.append((r.name, change, "...", "...", "",
                         f"{len(rs) - MAX_RANGES} more ranges (see --json)"))
    return rows


def _range_details(diff: SnapshotDiff) -> Optional[Section]:
    rows = [row for r in diff.ranges if r.compared and not r.same for row in _range_rows(r)]
    if not rows:
        return None
    return Section("Ranges added and removed", ("set", "change", "start", "end", "size", "only in"),
                   rows)


def _attrs(attrs: Optional[Mapping[str, Any]], keys: Sequence[str]) -> str:
    if attrs is None:
        return "-"
    parts = []
    for key in keys:
        value = attrs.get(key)
        if key in ("base", "addr", "phys") and isinstance(value, int):
            parts.append(f"{key}={value:#x}")
        elif key == "size" and isinstance(value, int):
            parts.append(f"size={human_size(value)}")
        else:
            parts.append(f"{key}={_value(value)}")
    return " ".join(parts)


def _key(item: ItemChange) -> str:
    return f"{item.key:#x}" if isinstance(item.key, int) and item.key > 255 else str(item.key)


def _item_section(title: str, items: Sequence[ItemChange], names: Sequence[str]) -> Section:
    rows = []
    for item in items:
        keys = list(dict.fromkeys([*(item.before or {}), *(item.after or {})]))
        shown = keys if item.kind != "changed" else list(item.changed)
        rows.append((item.kind, _key(item), _attrs(item.before, shown),
                     _attrs(item.after, shown)))
    return Section(title, ("change", "key", *names), rows)


def sections(diff: SnapshotDiff) -> List[Section]:
    """The text/Markdown view of a snapshot diff."""
    out = [_fields(diff), _range_summary(diff)]
    details = _range_details(diff)
    if details is not None:
        out.append(details)
    counts = diff.counts()
    for title in ("scratch areas", "memblock.memory", "memblock.reserved", "gigantic pages"):
        if title in counts:
            out.append(_item_section(title, diff.section(title), diff.names))
    notes = list(diff.notes)
    if diff.empty:
        notes.insert(0, "No differences.")
    if notes:
        out.append(Section("Notes", notes=notes))
    return out

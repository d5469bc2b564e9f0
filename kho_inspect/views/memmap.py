# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Memory map
----------

The ``kho_inspect.views.memmap`` module draws a kernel's physical address
space as an SVG picture (with `drawsvg <https://pypi.org/project/drawsvg/>`_):
one horizontal *lane* per kind of object, all on one address axis.

Lanes, top to bottom: the rule violations, ``memblock.memory`` by flag,
``memblock.reserved`` by flag, the KHO scratch classes (original, extended,
unpreserved; docs/kernel/kho.md#scratch), the memory this kernel preserves
for the next one (with the radix tree's own pages), the memory the previous
kernel preserved, gigantic hugetlb pages with the hugetlb CMA areas, and the
kernel image, initrd and ``reserve_mem=`` regions. A lane whose section the
snapshot lacks says why.

The axis is piecewise linear so that a 6 GiB guest and a multi-TiB host both
read at a glance:

* **holes** (addresses in no memory region and in no lane) are drawn a fixed
  few pixels wide, hatched, and marked on the axis;
* **quiet stretches** (memory where no lane but ``memblock.memory`` has
  anything) are shortened to at most a few percent of the width, marked
  with ``≈`` and their true size;
* everything else shares the remaining width in proportion to its size, and
  every object is at least a pixel or two wide, so a 4 KiB page on a 4 TiB
  host is still a visible tick.

Violations (the ranges of the evidence of failed rules) are drawn in red in
their own lane, as red bands through every lane, with numbered markers above
the lanes that refer to the list below the map; the whole picture gets a red
frame. Nothing here touches drgn or a file: a snapshot in, SVG text out.
"""

from __future__ import annotations  # drawsvg types in annotations, drawsvg maybe absent

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from kho_inspect.errors import KhoInspectError
from kho_inspect.model.check import CheckReport
from kho_inspect.model.memblock import Region
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.render import human_size

try:
    import drawsvg as draw
except ImportError:  # the lab guest runs kho_inspect from Debian packages, without drawsvg
    draw = None

__all__ = (
    "LANES",
    "MISSING_DRAWSVG",
    "Axis",
    "Lane",
    "MapStyle",
    "Span",
    "Violation",
    "available",
    "build_axis",
    "lanes",
    "memory_map",
    "violations",
)

LANES: Tuple[Tuple[str, str], ...] = (
    ("violations", "violations"),
    ("memory", "memblock.memory"),
    ("reserved", "memblock.reserved"),
    ("scratch", "KHO scratch"),
    ("preserved_out", "preserved (out)"),
    ("preserved_in", "preserved (in)"),
    ("hugetlb", "gigantic pages"),
    ("kernel", "image, initrd, reserve_mem"),
)
"""``(lane id, title)`` in drawing order."""

MISSING_DRAWSVG = "the memory map needs the drawsvg package, which is not installed"

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
RED = "#d7191c"

# Colours by legend key; keys not listed get PALETTE colours in the order met.
COLOURS: Dict[str, str] = {
    "memory:NONE": "#c7e9c0",
    "memory:KHO_SCRATCH": "#fdae6b",
    "memory:KHO_BOOTMEM": "#fdae6b",
    "memory:KHO_NOPRSRV": "#fdae6b",
    "memory:KHO_SCRATCH_EXT": "#9e9ac8",
    "memory:KHO_UNPRESERVED": "#9e9ac8",
    "memory:NOMAP": "#969696",
    "memory:HOTPLUG": "#9ecae1",
    "memory:MIRROR": "#66c2a4",
    "memory:DRIVER_MANAGED": "#bf812d",
    "reserved:NONE": "#6baed6",
    "reserved:RSRV_KERN": "#2171b5",
    "reserved:RSRV_NOINIT": "#c51b8a",
    "reserved:RSRV_HUGETLB": "#238b45",
    "reserved:RSRV_KERN|RSRV_HUGETLB": "#238b45",
    "scratch:original": "#e6550d",
    "scratch:extended": "#fdae6b",
    "scratch:unpreserved": "#756bb1",
    "preserved_out:preserved": "#c51b8a",
    "preserved_out:radix tree page": "#49006a",
    "preserved_in:preserved": "#f768a1",
    "hugetlb:boot": "#00441b",
    "hugetlb:buddy": "#41ab5d",
    "hugetlb:cma": "#a1d99b",
    "hugetlb:CMA area": "#e5f5e0",
    "kernel:image": "#252525",
    "kernel:initrd": "#737373",
    "kernel:reserve_mem": "#dd3497",
    "violations:violation": RED,
}
PALETTE = ("#8c510a", "#01665e", "#b2182b", "#5e3c99", "#f46d43", "#1b7837", "#4575b4",
           "#e08214", "#35978f", "#762a83", "#d6604d", "#878787")


@dataclass(frozen=True)
class Span:
    """One object drawn in a lane.

    :param key: its legend entry within the lane (a flag combination, a class).
    :param label: text drawn inside it when it is wide enough.
    :param title: its tooltip.
    """

    range: Range
    key: str
    label: str = ""
    title: str = ""


@dataclass(frozen=True)
class Lane:
    """One row of the map.

    :param note: shown in the lane when it has nothing to draw (why).
    :param nodes: ``(range, nid)`` runs of memory by node (memory lane only).
    """

    id: str
    title: str
    spans: Tuple[Span, ...] = ()
    note: str = ""
    outline: Tuple[Span, ...] = ()
    nodes: Tuple[Tuple[Range, Optional[int]], ...] = ()


@dataclass(frozen=True)
class Violation:
    """One failed rule and the ranges its evidence names."""

    number: int
    rule: str
    what: Tuple[str, ...]
    ranges: Tuple[Range, ...]
    count: int


@dataclass(frozen=True)
class MapStyle:
    """Geometry of the picture, in pixels."""

    width: int = 1600
    label_width: int = 190
    margin: int = 16
    right: int = 44
    lane_height: int = 26
    lane_gap: int = 7
    hole_width: float = 12.0
    quiet_share: float = 0.05
    segment_share: float = 0.04
    min_busy: float = 6.0
    min_quiet: float = 4.0
    min_span: float = 1.5
    font_size: int = 11
    tick_font: int = 9

    @property
    def plot_width(self) -> float:
        return self.width - self.label_width - self.margin - self.right


# --- lanes from a snapshot ---------------------------------------------------------


def _flag_key(region: Region) -> str:
    return "|".join(region.flags) or "NONE"


def _region_spans(lane: str, regions: Iterable[Region]) -> Tuple[Span, ...]:
    return tuple(
        Span(r.range, _flag_key(r), title=f"{lane} {r.range} {human_size(r.size)} "
             f"{_flag_key(r)}" + ("" if r.nid is None else f" node {r.nid}"))
        for r in regions if r.size)


def _node_runs(regions: Sequence[Region]) -> Tuple[Tuple[Range, Optional[int]], ...]:
    runs: List[Tuple[Range, Optional[int]]] = []
    for r in sorted(regions, key=lambda r: r.base):
        if runs and runs[-1][1] == r.nid:
            runs[-1] = (Range.from_bounds(runs[-1][0].base, r.end), r.nid)
        else:
            runs.append((r.range, r.nid))
    return tuple(runs) if len({nid for _, nid in runs}) > 1 else ()


def _memblock_lane(snap: Snapshot, name: str, lane_id: str, title: str) -> Lane:
    if snap.memblock is None or name not in snap.memblock.types:
        return Lane(lane_id, title, note=f"not available: {snap.why_missing('memblock')}")
    regions = snap.memblock.types[name].regions
    nodes = _node_runs(regions) if name == "memory" else ()
    return Lane(lane_id, title, _region_spans(f"memblock.{name}", regions),
                note="" if regions else "no regions", nodes=nodes)


def _scratch_lane(snap: Snapshot, title: str) -> Lane:
    if snap.scratch is None:
        return Lane("scratch", title, note=f"not available: {snap.why_missing('scratch')}")
    classes = snap.scratch.classes
    spans = []
    for name in ("original", "extended", "unpreserved"):
        for rng in classes.get(name):
            spans.append(Span(rng, name, title=f"{name} scratch {rng} {human_size(rng.size)}"))
    for area in snap.scratch.areas:
        if area.size:
            spans.append(Span(area.range, "original", label=area.role,
                              title=f"kho_scratch[{area.index}] ({area.role}) {area.range} "
                                    f"{human_size(area.size)}"))
    return Lane("scratch", title, _dedupe(spans))


def _dedupe(spans: Sequence[Span]) -> Tuple[Span, ...]:
    # A labelled area replaces the unlabelled class range that is exactly it.
    labelled = {(s.range, s.key) for s in spans if s.label}
    return tuple(s for s in spans if s.label or (s.range, s.key) not in labelled)


def _preserved_lane(snap: Snapshot, lane_id: str, title: str) -> Lane:
    report = getattr(snap, lane_id)
    if report is None:
        why = snap.why_missing(lane_id)
        return Lane(lane_id, title, note=f"not available: {why}")
    spans = [Span(Range(phys, size), "preserved",
                  title=f"preserved {Range(phys, size)} {human_size(size)}"
                        + ("" if order is None else f" order {order}"))
             for phys, size, order in report.ranges if size]
    page = 1 << report.page_shift
    spans += [Span(Range(p, page), "radix tree page", title=f"radix tree page {p:#x}")
              for p in report.tree_pages]
    note = "" if spans else "nothing preserved"
    return Lane(lane_id, title, tuple(spans), note=note)


def _hugetlb_lane(snap: Snapshot, title: str) -> Lane:
    report = snap.hugetlb
    if report is None:
        return Lane("hugetlb", title, note=f"not available: {snap.why_missing('hugetlb')}")
    spans = [Span(Range(p.phys, p.size), p.origin, label=human_size(p.size),
                  title=f"gigantic page {Range(p.phys, p.size)} {human_size(p.size)} "
                        f"{p.origin}, {p.state}" + ("" if p.node is None else f", node {p.node}"))
             for p in report.pages if p.size]
    areas = tuple(Span(Range(a.base, a.size), "CMA area",
                       title=f"hugetlb CMA area {Range(a.base, a.size)} {human_size(a.size)}"
                             + ("" if a.node is None else f" node {a.node}"))
                  for a in report.cma_areas if a.size)
    note = "" if spans or areas else "no gigantic pages"
    return Lane("hugetlb", title, tuple(spans), note=note, outline=areas)


def _kernel_lane(snap: Snapshot, title: str) -> Lane:
    spans = []
    if snap.image is not None and snap.image.size:
        spans.append(Span(snap.image, "image", label="kernel",
                          title=f"kernel image {snap.image} {human_size(snap.image.size)}"))
    if snap.initrd is not None and snap.initrd.size:
        spans.append(Span(snap.initrd, "initrd", label="initrd",
                          title=f"initrd {snap.initrd} {human_size(snap.initrd.size)}"))
    for entry in snap.reserve_mem:
        if entry.size:
            rng = Range(entry.start, entry.size)
            spans.append(Span(rng, "reserve_mem", label=entry.name,
                              title=f"reserve_mem {entry.name!r} {rng} {human_size(rng.size)}"))
    return Lane("kernel", title, tuple(spans), note="" if spans else "not known")


def violations(checks: Optional[CheckReport]) -> List[Violation]:
    """The failed rules of ``checks``, numbered from 1, with their evidence ranges."""
    if checks is None:
        return []
    out = []
    for result in checks.by_status("fail"):
        ranges = tuple(e.range for e in result.evidence if e.range is not None and e.range.size)
        out.append(Violation(len(out) + 1, result.id, tuple(e.what for e in result.evidence),
                             ranges, len(result.evidence)))
    return out


def _violation_lane(found: Sequence[Violation], checks: Optional[CheckReport]) -> Lane:
    spans = tuple(Span(rng, "violation", label=str(v.number),
                       title=f"{v.number}: {v.rule} {rng}")
                  for v in found for rng in v.ranges)
    if spans:
        note = ""
    elif found:
        note = "failed rules name no address (see below)"
    else:
        note = "none" if checks is not None else "checks not run"
    return Lane("violations", "violations", spans, note=note)


def lanes(snap: Snapshot, checks: Optional[CheckReport] = None) -> List[Lane]:
    """Every lane of the map of ``snap``, in :data:`LANES` order."""
    titles = dict(LANES)
    return [
        _violation_lane(violations(checks), checks),
        _memblock_lane(snap, "memory", "memory", titles["memory"]),
        _memblock_lane(snap, "reserved", "reserved", titles["reserved"]),
        _scratch_lane(snap, titles["scratch"]),
        _preserved_lane(snap, "preserved_out", titles["preserved_out"]),
        _preserved_lane(snap, "preserved_in", titles["preserved_in"]),
        _hugetlb_lane(snap, titles["hugetlb"]),
        _kernel_lane(snap, titles["kernel"]),
    ]


# --- the axis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A stretch of the axis.

    :param kind: ``hole`` (no memory, nothing drawn), ``quiet`` (memory and
        nothing else) or ``busy``.
    :param shortened: drawn narrower than the linear scale would (a hole, or a
        quiet stretch at its width cap).
    """

    range: Range
    kind: str
    x: float
    width: float
    shortened: bool = False


@dataclass(frozen=True)
class Axis:
    """Where each physical address goes on the picture.

    :param x0: where the axis starts, in pixels.
    :param scale: pixels per byte where the axis is linear (on average).
    """

    pieces: Tuple[Piece, ...]
    x0: float
    width: float
    scale: float = 0.0
    _starts: Tuple[int, ...] = field(default=(), repr=False)

    @property
    def start(self) -> int:
        return self.pieces[0].range.base if self.pieces else 0

    @property
    def end(self) -> int:
        return self.pieces[-1].range.end if self.pieces else 0

    def x(self, addr: int) -> float:
        """The x coordinate of ``addr`` (clamped to the axis)."""
        if not self.pieces:
            return self.x0
        i = min(max(bisect_right(self._starts, addr) - 1, 0), len(self.pieces) - 1)
        p = self.pieces[i]
        frac = min(max((addr - p.range.base) / p.range.size, 0.0), 1.0)
        return p.x + frac * p.width


def _breakpoints(ranges: Iterable[Range]) -> List[int]:
    points = set()
    for r in ranges:
        points.add(r.base)
        points.add(r.end)
    return sorted(points)


def _classify(memory: Optional[RangeSet], features: RangeSet, points: Sequence[int]
              ) -> List[Tuple[Range, str]]:
    out: List[Tuple[Range, str]] = []
    for lo, hi in zip(points, points[1:]):
        if hi <= lo:
            continue
        mid = lo + (hi - lo) // 2
        if mid in features:
            kind = "busy"
        elif memory is not None and mid not in memory:
            kind = "hole"
        else:
            kind = "quiet"
        if out and out[-1][1] == kind and out[-1][0].end == lo:
            out[-1] = (Range.from_bounds(out[-1][0].base, hi), kind)
        else:
            out.append((Range.from_bounds(lo, hi), kind))
    return out


def _segments(stretches: Sequence[Tuple[Range, str]]) -> List[int]:
    """The index of the memory segment (the stretches between two holes) of each stretch."""
    out, seg = [], 0
    for i, (_, kind) in enumerate(stretches):
        if kind == "hole" and i:
            seg += 1
        out.append(seg)
    return out


class _Clamped:
    """The sizes of the stretches of one kind in one segment, sorted, to sum
    ``clamp(k * size, low, high)`` over them in O(log n) for any ``k``."""

    def __init__(self, sizes: Iterable[int], low: float, high: float) -> None:
        self.sizes = sorted(sizes)
        self.prefix = [0]
        for size in self.sizes:
            self.prefix.append(self.prefix[-1] + size)
        self.low, self.high = low, high

    def total(self, k: float) -> float:
        n = len(self.sizes)
        if not n or k <= 0:
            return n * self.low
        i = bisect_right(self.sizes, self.low / k)  # these are raised to low
        j = n if self.high == float("inf") else max(i, bisect_right(self.sizes, self.high / k))
        capped = (n - j) * self.high if j < n else 0.0  # never 0 * inf
        return i * self.low + k * (self.prefix[j] - self.prefix[i]) + capped


def _widths(stretches: Sequence[Tuple[Range, str]], style: MapStyle
            ) -> List[Tuple[float, bool]]:
    """``(width, shortened)`` of each stretch.

    Holes get a fixed width. Other stretches get ``k * size``, where ``k`` is
    found by bisection so that the widths fill the plot, with three limits:
    a quiet stretch at most ``quiet_share`` of the width, a busy one at least
    ``min_busy``, and each memory segment between holes at least
    ``segment_share`` of the width (its own ``k`` is raised to get there), so
    the low 2 GiB of a 4 TiB host stay readable.
    """
    total = style.plot_width
    holes = sum(1 for _, kind in stretches if kind == "hole")
    hole_w = min(style.hole_width, 0.3 * total / holes) if holes else 0.0
    free = total - holes * hole_w
    busy = any(kind == "busy" for _, kind in stretches)
    cap = style.quiet_share * total if busy else float("inf")
    n = len(stretches) - holes
    shrink = min(1.0, 0.5 * free / (n * max(style.min_busy, style.min_quiet))) if n else 1.0
    limits = {"busy": (style.min_busy * shrink, float("inf")),
              "quiet": (style.min_quiet * shrink, max(cap, style.min_quiet * shrink))}
    segment = _segments(stretches)
    groups: Dict[Tuple[int, str], List[int]] = {}
    for (r, kind), seg in zip(stretches, segment):
        if kind != "hole":
            groups.setdefault((seg, kind), []).append(r.size)
    sizes: Dict[int, int] = {}
    for (seg, _), members in groups.items():
        sizes[seg] = sizes.get(seg, 0) + sum(members)
    seg_min = min(style.segment_share * total, 0.5 * free / max(len(sizes), 1))
    floor = {seg: seg_min / size for seg, size in sizes.items()}
    clamped = [(seg, _Clamped(members, *limits[kind])) for (seg, kind), members in groups.items()]

    def used(k: float) -> float:
        return holes * hole_w + sum(c.total(max(k, floor[seg])) for seg, c in clamped)

    smallest = min((r.size for r, kind in stretches if kind != "hole"), default=1)
    lo, hi = 0.0, 2 * total / smallest
    for _ in range(64):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if used(mid) < total else (lo, mid)
    out = []
    for (r, kind), seg in zip(stretches, segment):
        if kind == "hole":
            out.append((hole_w, True))
            continue
        linear = max(hi, floor[seg]) * r.size
        low, high = limits[kind]
        out.append((min(max(low, linear), high), kind == "quiet" and linear > cap))
    return out


def build_axis(all_lanes: Sequence[Lane], style: MapStyle = MapStyle()) -> Axis:
    """The piecewise linear axis that shows every lane's objects (see the module docs)."""
    memory_lane = next((lane for lane in all_lanes if lane.id == "memory"), None)
    memory = (RangeSet(s.range for s in memory_lane.spans)
              if memory_lane is not None and memory_lane.spans else None)
    features = RangeSet(s.range for lane in all_lanes if lane.id != "memory"
                        for s in (*lane.spans, *lane.outline))
    everything = [s.range for lane in all_lanes for s in (*lane.spans, *lane.outline)]
    points = _breakpoints(everything)
    x0 = float(style.margin + style.label_width)
    if len(points) < 2:
        return Axis((), x0, style.plot_width)
    stretches = _classify(memory, features, points)
    widths = _widths(stretches, style)
    pieces = []
    x = x0
    for (rng, kind), (w, shortened) in zip(stretches, widths):
        pieces.append(Piece(rng, kind, x, w, shortened))
        x += w
    linear = [p for p in pieces if not p.shortened]
    scale = sum(p.width for p in linear) / max(sum(p.range.size for p in linear), 1)
    return Axis(tuple(pieces), x0, style.plot_width, scale,
                tuple(p.range.base for p in pieces))


# --- drawing -------------------------------------------------------------------------------


class _Colours:
    def __init__(self) -> None:
        self.used: Dict[str, str] = {}
        self._next = 0

    def get(self, lane: str, key: str) -> str:
        full = f"{lane}:{key}"
        if full not in self.used:
            colour = COLOURS.get(full)
            if colour is None:
                colour = PALETTE[self._next % len(PALETTE)]
                self._next += 1
            self.used[full] = colour
        return self.used[full]


@dataclass
class _Box:
    x1: float
    x2: float
    spans: List[Span]
    covered: float

    @property
    def label(self) -> str:
        label = self.spans[0].label
        return label if len(self.spans) == 1 or not label else f"{len(self.spans)} × {label}"

    @property
    def opacity(self) -> float:
        """Full for one object or for objects that cover half their box or more;
        lighter for a few small objects spread over more pixels."""
        if len(self.spans) == 1:
            return 1.0
        return min(1.0, 0.4 + 1.2 * self.covered / max(self.x2 - self.x1, 1e-9))


def _boxes(axis: Axis, spans: Sequence[Span], min_w: float) -> Dict[str, List[_Box]]:
    """Spans by key as pixel boxes at least ``min_w`` wide; neighbours with the
    same label closer than half a pixel merge into one box."""
    out: Dict[str, List[_Box]] = {}
    small = 3 * min_w
    for span in sorted(spans, key=lambda s: s.range):
        x1, x2 = axis.x(span.range.base), axis.x(span.range.end)
        real = x2 - x1
        if real < min_w:
            mid = (x1 + x2) / 2
            x1, x2 = mid - min_w / 2, mid + min_w / 2
        boxes = out.setdefault(span.key, [])
        last = boxes[-1] if boxes else None
        if (last is not None and x1 <= last.x2 + 0.5 and span.label == last.spans[0].label
                and real < small and last.covered / len(last.spans) < small):
            last.x2 = max(last.x2, x2)
            last.spans.append(span)
            last.covered += real
        else:
            boxes.append(_Box(x1, x2, [span], real))
    return out


def _title(box: _Box) -> str:
    if len(box.spans) == 1:
        return box.spans[0].title
    total = sum(s.range.size for s in box.spans)
    first, last = box.spans[0].range, box.spans[-1].range
    return (f"{len(box.spans)} {box.spans[0].key} ranges, {human_size(total)}, "
            f"{first.base:#x}-{last.last:#x}")


def _text(text: str, size: float, x: float, y: float, **kwargs: object) -> draw.Text:
    return draw.Text(text, size, x, y, font_family=FONT, **kwargs)


def text_width(text: str, size: float) -> float:
    """About how wide ``text`` is in DejaVu Sans at ``size`` pixels."""
    wide = sum(1 for c in text if c.isupper() or c.isdigit() or c in "_|@%MW")
    return size * (0.7 * wide + 0.56 * (len(text) - wide))


def _label_fits(label: str, width: float, size: float) -> bool:
    return bool(label) and width >= text_width(label, size) + 8


class _Painter:
    def __init__(self, snap: Snapshot, checks: Optional[CheckReport], style: MapStyle) -> None:
        self.snap = snap
        self.checks = checks
        self.style = style
        self.lanes = lanes(snap, checks)
        self.found = violations(checks)
        self.axis = build_axis(self.lanes, style)
        self.colours = _Colours()
        self.top = 100.0
        self.lanes_bottom = self.top + len(self.lanes) * (style.lane_height + style.lane_gap)

    def lane_y(self, index: int) -> float:
        return self.top + index * (self.style.lane_height + self.style.lane_gap)

    # header ---------------------------------------------------------------------

    def header(self) -> draw.Group:
        s, snap = self.style, self.snap
        g = draw.Group(id="header")
        release = snap.release or "unknown kernel"
        parts = [f"Physical memory of {release}"]
        if snap.arch:
            parts.append(snap.arch)
        memory = snap.memblock.memory.ranges().total if snap.memblock is not None else 0
        if memory:
            parts.append(f"{human_size(memory)} of memory")
        if snap.activation is not None:
            parts.append(f"KHO {snap.activation.state}")
        if snap.kho_boot is not None:
            parts.append("KHO boot" if snap.kho_boot else "cold boot")
        g.append(_text(" · ".join(parts), 16, s.margin, 24, font_weight="bold"))
        g.append(self._summary(s.margin, 46))
        span = (f"{self.axis.start:#x} - {self.axis.end:#x}" if self.axis.pieces
                else "no ranges")
        g.append(_text(f"address axis: {span}, piecewise linear (holes and quiet stretches "
                       "shortened, see the axis)", s.tick_font + 1, s.margin, 64,
                       fill="#555555"))
        return g

    def _summary(self, x: float, y: float) -> draw.Text:
        if self.checks is None:
            return _text("checks not run", 13, x, y, fill="#555555")
        counts = {k: len(self.checks.by_status(k)) for k in ("pass", "fail", "skip")}
        failed = counts["fail"]
        text = (f"checks: {counts['pass']} pass, {failed} FAILED, {counts['skip']} skipped"
                if failed else f"checks: all {counts['pass']} that ran pass "
                               f"({counts['skip']} skipped)")
        return _text(text, 13, x, y, fill=RED if failed else "#1a9641", font_weight="bold",
                     id="check-summary")

    # lanes ----------------------------------------------------------------------

    def lane(self, index: int, lane: Lane) -> draw.Group:
        s = self.style
        y = self.lane_y(index)
        g = draw.Group(id=f"lane-{lane.id}", class_="lane")
        g.append(_text(lane.title, s.font_size, s.margin + s.label_width - 10,
                       y + s.lane_height / 2 + 4, text_anchor="end", font_weight="bold",
                       fill=RED if lane.id == "violations" and lane.spans else "#222222"))
        g.append(draw.Rectangle(self.axis.x0, y, self.axis.width, s.lane_height,
                                fill="#f7f7f7", stroke="#d9d9d9", stroke_width=0.5))
        for span in lane.outline:
            self._outline(g, span, lane.id, y)
        for key, boxes in _boxes(self.axis, lane.spans, s.min_span).items():
            colour = self.colours.get(lane.id, key)
            for box in boxes:
                self._box(g, lane, box, colour, y)
        for rng, nid in lane.nodes:
            self._node(g, rng, nid, y)
        return g

    def notes(self) -> draw.Group:
        """Why a lane is empty, written over it (and over the holes)."""
        s = self.style
        g = draw.Group(id="lane-notes")
        for index, lane in enumerate(self.lanes):
            if lane.note and not lane.spans:
                y = self.lane_y(index) + s.lane_height / 2 + 4
                g.append(_text(lane.note, s.tick_font + 1, self.axis.x0 + 6, y, fill="#6f6f6f",
                               font_style="italic", stroke="#f7f7f7", stroke_width=3,
                               paint_order="stroke"))
        return g

    def _box(self, g: draw.Group, lane: Lane, box: _Box, colour: str, y: float) -> None:
        s = self.style
        violation = lane.id == "violations"
        wide = len(box.spans) == 1 and box.x2 - box.x1 > 8
        rect = draw.Rectangle(box.x1, y + 2, box.x2 - box.x1, s.lane_height - 4, fill=colour,
                              stroke="#7f0000" if violation else "#ffffff" if wide else "none",
                              stroke_width=1.5 if violation else 0.8 if wide else 0,
                              fill_opacity=round(box.opacity, 2))
        rect.append_title(_title(box))
        g.append(rect)
        label = box.label
        if violation:
            return
        if _label_fits(label, box.x2 - box.x1, s.tick_font):
            g.append(_text(label, s.tick_font, (box.x1 + box.x2) / 2, y + s.lane_height / 2 + 3,
                           text_anchor="middle", fill=_ink(colour)))

    def _outline(self, g: draw.Group, span: Span, lane_id: str, y: float) -> None:
        x1, x2 = self.axis.x(span.range.base), self.axis.x(span.range.end)
        colour = self.colours.get(lane_id, span.key)
        rect = draw.Rectangle(x1, y + 1, max(x2 - x1, self.style.min_span),
                              self.style.lane_height - 2, fill=colour, stroke="#238b45",
                              stroke_width=1, stroke_dasharray="3,2")
        rect.append_title(span.title)
        g.append(rect)

    def _node(self, g: draw.Group, rng: Range, nid: Optional[int], y: float) -> None:
        x1, x2 = self.axis.x(rng.base), self.axis.x(rng.end)
        g.append(draw.Line(x1, y - 2, x1, y + self.style.lane_height + 2, stroke="#252525",
                           stroke_width=1.5))
        label = "no node" if nid is None else f"node {nid}"
        if _label_fits(label, x2 - x1, self.style.tick_font):
            g.append(_text(label, self.style.tick_font, x1 + 3, y + 11, fill="#252525"))

    # axis -----------------------------------------------------------------------

    def holes(self) -> draw.Group:
        """Hatched columns through every lane where there is no memory."""
        g = draw.Group(id="holes")
        top, bottom = self.top - 3, self.lanes_bottom - self.style.lane_gap + 3
        for p in self.axis.pieces:
            if p.kind == "hole":
                rect = draw.Rectangle(p.x, top, p.width, bottom - top, fill="url(#hatch)",
                                      stroke="#bdbdbd", stroke_width=0.5)
                rect.append_title(f"hole {p.range} {human_size(p.range.size)} (no memory)")
                g.append(rect)
        return g

    def ticks(self) -> draw.Group:
        s = self.style
        g = draw.Group(id="axis")
        y = self.lanes_bottom + 2
        g.append(draw.Line(self.axis.x0, y, self.axis.x0 + self.axis.width, y, stroke="#252525"))
        for p in self.axis.pieces:
            if p.kind == "hole":
                g.append(_text("//", 10, p.x + p.width / 2, y + 5, text_anchor="middle",
                               fill="#636363"))
            elif p.shortened:
                g.append(_text("≈", 13, p.x + p.width / 2, y + 5, text_anchor="middle",
                               fill="#636363"))
                size = human_size(p.range.size)
                if _label_fits(size, p.width, s.tick_font - 1):
                    g.append(_text(size, s.tick_font - 1, p.x + p.width / 2, y + 40,
                                   text_anchor="middle", fill="#969696", font_style="italic"))
        for addr, x in self._tick_positions():
            g.append(draw.Line(x, y, x, y + 5, stroke="#252525"))
            g.append(_text(f"{addr:#x}", s.tick_font, x, y + 16, text_anchor="middle",
                           fill="#252525"))
            g.append(_text(human_size(addr) if addr else "0", s.tick_font - 1, x, y + 27,
                           text_anchor="middle", fill="#636363"))
        return g

    def _tick_positions(self) -> List[Tuple[int, float]]:
        pieces = self.axis.pieces
        if not pieces:
            return []
        wanted: List[Tuple[int, int]] = [(0, pieces[0].range.base), (0, pieces[-1].range.end)]
        step = _step(self.axis.scale)
        for p in pieces:
            if p.shortened:
                wanted += [(1 if p.kind == "hole" else 2, a) for a in (p.range.base,
                                                                        p.range.end)]
            else:
                first = -(-p.range.base // step) * step
                wanted += [(3, a) for a in range(first, p.range.end, step)]
        spacing = text_width(f"{self.axis.end:#x}", self.style.tick_font) + 12
        taken: List[float] = []
        out = []
        for _, addr in sorted(wanted):
            x = self.axis.x(addr)
            if all(abs(x - t) >= spacing for t in taken):
                taken.append(x)
                out.append((addr, x))
        return sorted(out)

    # violations and legend --------------------------------------------------------------

    def bands(self) -> draw.Group:
        """Red bands through every lane and numbered markers above them."""
        g = draw.Group(id="violation-bands")
        top, bottom = self.top - 14, self.lanes_bottom - self.style.lane_gap
        spans = [Span(r, str(v.number)) for v in self.found for r in v.ranges]
        for key, boxes in _boxes(self.axis, spans, 3.0).items():
            for box in boxes:
                g.append(draw.Rectangle(box.x1, top, box.x2 - box.x1, bottom - top, fill=RED,
                                        fill_opacity=0.16, stroke=RED, stroke_width=1))
                cx = (box.x1 + box.x2) / 2
                g.append(draw.Lines(cx - 7, top - 12, cx + 7, top - 12, cx, top, close=True,
                                    fill=RED))
                g.append(_text(key, 9, cx, top - 14, text_anchor="middle", fill=RED,
                               font_weight="bold"))
        return g

    def violation_list(self, y: float) -> Tuple[draw.Group, float]:
        s = self.style
        g = draw.Group(id="violation-list")
        if not self.found:
            return g, y
        g.append(_text("Violations", 13, s.margin, y + 14, fill=RED, font_weight="bold"))
        y += 22
        for v in self.found[:12]:
            first = v.what[0] if v.what else ""
            more = f" (+{v.count - 1} more)" if v.count > 1 else ""
            text = f"{v.number}  {v.rule}: {_clip(first, 170)}{more}"
            g.append(_text(text, s.font_size, s.margin + 8, y + 12, fill=RED))
            y += 16
        if len(self.found) > 12:
            g.append(_text(f"... {len(self.found) - 12} more failed rules (see report.md)",
                           s.font_size, s.margin + 8, y + 12, fill=RED))
            y += 16
        return g, y + 6

    def legend(self, y: float) -> Tuple[draw.Group, float]:
        s = self.style
        g = draw.Group(id="legend")
        g.append(_text("Legend", 13, s.margin, y + 14, font_weight="bold"))
        y += 24
        titles = dict(LANES)
        by_lane: Dict[str, List[Tuple[str, str]]] = {}
        for full, colour in self.colours.used.items():
            lane, key = full.split(":", 1)
            by_lane.setdefault(lane, []).append((key, colour))
        for lane_id, _ in LANES:
            entries = by_lane.get(lane_id)
            if not entries:
                continue
            x = s.margin + 8.0
            g.append(_text(titles[lane_id], s.font_size, x, y + 10, font_weight="bold"))
            x = s.margin + 190.0
            for key, colour in entries:
                w = text_width(key, s.font_size) + 44
                if x + w > s.width - s.margin:
                    x, y = s.margin + 190.0, y + 18
                g.append(draw.Rectangle(x, y, 22, 12, fill=colour, stroke="#636363",
                                        stroke_width=0.5, class_="swatch"))
                g.append(_text(key, s.font_size, x + 28, y + 10))
                x += w
            y += 18
        memory_known = any(lane.id == "memory" and lane.spans for lane in self.lanes)
        quiet = ("a stretch with only free memory" if memory_known else
                 "a stretch where no lane has anything (memory or hole: memblock is not kept)")
        notes = [f"// hatched: a hole (no memory), drawn a fixed width;  ≈: {quiet}, shortened "
                 "(its true size below the axis);  lighter colour: many small objects in a few "
                 "pixels;  red bands and numbers: violations."]
        for note in notes:
            g.append(_text(note, s.tick_font + 1, s.margin + 8, y + 12, fill="#555555"))
            y += 16
        return g, y + 4


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _step(scale: float) -> int:
    """The power of two (at least 1 MiB) that is 110 px or more at ``scale`` px per byte."""
    step = 1 << 20
    while step * scale < 110 and step < 1 << 62:
        step <<= 1
    return step


def _ink(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def _hatch() -> draw.Pattern:
    pattern = draw.Pattern(6, 6, id="hatch", patternUnits="userSpaceOnUse")
    pattern.append(draw.Rectangle(0, 0, 6, 6, fill="#f0f0f0"))
    pattern.append(draw.Line(0, 6, 6, 0, stroke="#bdbdbd", stroke_width=1))
    return pattern


def available() -> bool:
    """Whether the memory map can be drawn (drawsvg is installed)."""
    return draw is not None


def memory_map(snap: Snapshot, checks: Optional[CheckReport] = None,
               style: MapStyle = MapStyle()) -> str:
    """The SVG text of the memory map of ``snap``, with the violations of ``checks``.

    :raises KhoInspectError: drawsvg is not installed (:func:`available`).
    """
    if not available():
        raise KhoInspectError(MISSING_DRAWSVG, "install it with pip install drawsvg")
    p = _Painter(snap, checks, style)
    groups: List[draw.DrawingElement] = [p.header()]
    groups += [p.lane(i, lane) for i, lane in enumerate(p.lanes)]
    groups += [p.holes(), p.notes(), p.bands(), p.ticks()]
    y = p.lanes_bottom + 52
    listing, y = p.violation_list(y)
    legend, y = p.legend(y)
    height = int(y + style.margin)
    d = draw.Drawing(style.width, height, id_prefix="m")
    d.append_def(_hatch())
    d.append(draw.Rectangle(0, 0, style.width, height, fill="#ffffff",
                            stroke=RED if p.found else "none", stroke_width=6 if p.found else 0))
    for g in (*groups, listing, legend):
        d.append(g)
    return d.as_svg()

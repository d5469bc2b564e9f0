# SPDX-License-Identifier: LGPL-2.1-or-later
"""The SVG memory map: its axis, its lanes, and what a real renderer makes of it.

The map is rendered to PNG by rsvg-convert (librsvg, Debian's librsvg2-bin,
installed by scripts/install-host-deps.sh) and the pixels are read back: each
lane's colours must appear in its row, the legend must hold every swatch,
and a failed rule must put red on the picture.
"""

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
from memmap_snapshots import GIB, MIB, checks, guest, host, page_in_scratch

from kho_inspect.model.snapshot import Snapshot
from kho_inspect.ranges import Range
from kho_inspect.views.memmap import (
    COLOURS,
    LANES,
    RED,
    Lane,
    MapStyle,
    Span,
    build_axis,
    lanes,
    memory_map,
)

SVG = "{http://www.w3.org/2000/svg}"
RSVG = shutil.which("rsvg-convert")

Pixel = Tuple[int, int, int]


# --- a PNG reader (8-bit RGB or RGBA, as rsvg-convert writes) -------------------------------


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _add_bytes(a: bytes, b: bytes) -> bytes:
    """Bytewise ``(a + b) & 0xff`` on whole rows at once (no carries between bytes)."""
    n = len(a)
    low, high = int.from_bytes(b"\x7f" * n, "big"), int.from_bytes(b"\x80" * n, "big")
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "big")


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    if kind == 0:
        return line
    if kind == 2:
        return bytearray(_add_bytes(bytes(line), bytes(prev)))
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (a + prev[i]) // 2) & 0xFF
        else:
            line[i] = (line[i] + _paeth(a, prev[i], prev[i - bpp] if i >= bpp else 0)) & 0xFF
    return line


def read_png(data: bytes) -> Tuple[int, int, List[List[Pixel]]]:
    """``(width, height, rows)``: each row a list of ``(r, g, b)`` pixels
    (``None`` where not opaque)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), "8-bit RGB or RGBA"
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows = zlib.decompress(idat), width * bpp, []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), prev, bpp)
        rows.append([(line[x], line[x + 1], line[x + 2])
                     if bpp == 3 or line[x + 3] == 255 else None
                     for x in range(0, stride, bpp)])
        prev = line
    return width, height, rows


def _rgb(colour: str) -> Pixel:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def colours_in(rows: List[List[Pixel]], y0: int, y1: int) -> Set[Pixel]:
    """The opaque colours in rows [y0, y1)."""
    return {p for row in rows[max(y0, 0):y1] for p in row if p is not None}


def has_colour(seen: Set[Pixel], colour: str, tolerance: int = 24, sparse: bool = False
               ) -> bool:
    """Whether a colour close to ``colour`` was seen (edges are antialiased).

    :param sparse: also accept ``colour`` drawn at opacity 0.4 and more over
        the lane's background, as boxes of a few small objects are.
    """
    want, ground = _rgb(colour), _rgb("#f7f7f7")
    alphas = [a / 20 for a in range(8, 21)] if sparse else [1.0]
    tints = [tuple(round(a * w + (1 - a) * g) for w, g in zip(want, ground)) for a in alphas]
    return any(sum(abs(x - y) for x, y in zip(p, t)) <= tolerance for p in seen for t in tints)


ZOOM = 0.5
"""The tests read the PNG at half size (four times fewer pixels to decode in Python)."""


def render(svg: str, tmp_path: Path, name: str, zoom: float = ZOOM
           ) -> Tuple[int, int, List[List[Pixel]]]:
    """Render with rsvg-convert; the full-size PNG is left in ``tmp_path`` to look at."""
    assert RSVG, "rsvg-convert is missing: run scripts/install-host-deps.sh (librsvg2-bin)"
    src, png, small = (tmp_path / f"{name}.svg", tmp_path / f"{name}.png",
                       tmp_path / f"{name}-small.png")
    src.write_text(svg)
    subprocess.run([RSVG, "-o", str(png), str(src)], check=True, timeout=60)
    subprocess.run([RSVG, "--zoom", str(zoom), "-o", str(small), str(src)], check=True,
                   timeout=60)
    return read_png(small.read_bytes())


# --- the SVG itself ---------------------------------------------------------------------------


def _groups(svg: str) -> Dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id")}


@pytest.fixture(scope="module")
def guest_map() -> Tuple[Snapshot, str]:
    snap = guest()
    return snap, memory_map(snap, checks())


def test_svg_is_well_formed_with_every_lane_and_the_legend(guest_map):
    _, svg = guest_map
    groups = _groups(svg)
    for lane_id, title in LANES:
        lane = groups[f"lane-{lane_id}"]
        texts = [t.text for t in lane.iter(f"{SVG}text")]
        assert title in texts
    legend = groups["legend"]
    labels = {t.text for t in legend.iter(f"{SVG}text")}
    assert {"NONE", "KHO_SCRATCH", "original", "extended", "boot", "preserved",
            "RSRV_KERN|RSRV_HUGETLB", "radix tree page", "reserve_mem"} <= labels
    assert len(list(legend.iter(f"{SVG}rect"))) >= 12


def test_lanes_say_why_a_section_is_missing():
    snap = guest()
    from dataclasses import replace

    bare = replace(snap, memblock=None, hugetlb=None,
                   missing={"memblock": "memblock was discarded after boot (no "
                                        "ARCH_KEEP_MEMBLOCK)",
                            "hugetlb": "hugetlb: no gigantic hstate"})
    by_id = {lane.id: lane for lane in lanes(bare)}
    assert by_id["memory"].note == ("not available: memblock was discarded after boot (no "
                                    "ARCH_KEEP_MEMBLOCK)")
    assert by_id["hugetlb"].note == "not available: hugetlb: no gigantic hstate"
    assert by_id["violations"].note == "checks not run"
    svg = memory_map(bare)
    assert "memblock was discarded after boot" in svg
    ET.fromstring(svg)


# --- the axis ------------------------------------------------------------------------------


def _lane(*ranges: Range, lane_id: str = "reserved") -> Lane:
    return Lane(lane_id, lane_id, tuple(Span(r, "k") for r in ranges))


def test_holes_are_drawn_a_fixed_width_and_quiet_memory_is_shortened():
    style = MapStyle()
    memory = _lane(Range(0, 2 * GIB), Range(4 * GIB, 60 * GIB), lane_id="memory")
    feature = _lane(Range(GIB, 4 * MIB), Range(4 * GIB, GIB))
    axis = build_axis([memory, feature], style)
    kinds = [(p.kind, p.shortened) for p in axis.pieces]
    assert ("hole", True) in kinds
    hole = next(p for p in axis.pieces if p.kind == "hole")
    assert hole.range == Range(2 * GIB, 2 * GIB) and hole.width == style.hole_width
    quiet = max((p for p in axis.pieces if p.kind == "quiet"), key=lambda p: p.range.size)
    assert quiet.range == Range(5 * GIB, 59 * GIB) and quiet.shortened
    assert quiet.width <= style.quiet_share * style.plot_width + 1e-6
    busy = [p for p in axis.pieces if p.kind == "busy"]
    assert all(p.width >= style.min_busy - 1e-6 for p in busy)
    # the pieces tile the plot, and x grows with the address
    assert axis.pieces[0].x == axis.x0
    assert sum(p.width for p in axis.pieces) == pytest.approx(style.plot_width)
    xs = [axis.x(a) for a in range(0, 64 * GIB, 256 * MIB)]
    assert xs == sorted(xs)


def test_a_page_on_a_4_tib_host_is_still_visible():
    big = _lane(Range(0, 4 << 40), lane_id="memory")
    page = _lane(Range(3 << 40, 4096))
    axis = build_axis([big, page])
    piece = next(p for p in axis.pieces if p.range == Range(3 << 40, 4096))
    assert piece.width >= MapStyle().min_busy - 1e-6


# --- rendered by a real renderer ---------------------------------------------------------------


def _lane_rows(svg: str, lane_id: str) -> Tuple[int, int]:
    """The pixel rows of a lane's inside in the PNG read at :data:`ZOOM`."""
    lane = _groups(svg)[f"lane-{lane_id}"]
    bg = next(r for r in lane.iter(f"{SVG}rect") if r.get("fill") == "#f7f7f7")
    y, h = float(bg.get("y")), float(bg.get("height"))
    return int((y + 3) * ZOOM), int((y + h - 3) * ZOOM)


@pytest.mark.parametrize("scale", ["guest", "host"])
def test_rendered_png_shows_each_lane_and_the_legend(scale, tmp_path):
    snap = guest() if scale == "guest" else host()
    svg = memory_map(snap, checks())
    width, height, rows = render(svg, tmp_path, scale)
    assert width == MapStyle().width * ZOOM and height > 400 * ZOOM
    expect = {
        "memory": ["memory:NONE", "memory:KHO_SCRATCH"],
        "reserved": ["reserved:RSRV_KERN|RSRV_HUGETLB", "reserved:RSRV_NOINIT"],
        "scratch": ["scratch:original", "scratch:extended"],
        "hugetlb": ["hugetlb:boot"],
    }
    for lane_id, keys in expect.items():
        seen = colours_in(rows, *_lane_rows(svg, lane_id))
        for key in keys:
            assert has_colour(seen, COLOURS[key], sparse=scale == "host"), (scale, lane_id, key)
    legend = _groups(svg)["legend"]
    top = min(float(r.get("y")) for r in legend.iter(f"{SVG}rect"))
    swatches = colours_in(rows, int(top * ZOOM), height)
    for key in ("scratch:original", "hugetlb:boot", "preserved_out:preserved",
                "reserved:RSRV_NOINIT"):
        assert has_colour(swatches, COLOURS[key], tolerance=6), key
    assert not has_colour(colours_in(rows, 0, height), RED, tolerance=6)  # nothing failed


def test_a_violation_cannot_be_missed(tmp_path):
    snap = guest()
    bad = Range(0x7000_0000, 2 * MIB)
    svg = memory_map(snap, checks({"hugetlb-boot-outside-scratch": [page_in_scratch(bad)]}))
    groups = _groups(svg)
    texts = [t.text for t in groups["violation-list"].iter(f"{SVG}text")]
    assert any("hugetlb-boot-outside-scratch" in (t or "") for t in texts)
    assert [t.text for t in groups["violation-bands"].iter(f"{SVG}text")] == ["1"]
    width, height, rows = render(svg, tmp_path, "violation", zoom=1.0)
    assert has_colour(colours_in(rows, *[int(y / ZOOM) for y in _lane_rows(svg, "violations")]),
                      RED, tolerance=6)
    assert has_colour(colours_in(rows, 0, 2), RED, tolerance=6)  # the frame
    # the band crosses the lanes: red-tinted pixels in an empty lane at its x
    band = next(r for r in groups["violation-bands"].iter(f"{SVG}rect"))
    x = int(float(band.get("x")) + float(band.get("width")) / 2)
    y0, y1 = (int(y / ZOOM) for y in _lane_rows(svg, "hugetlb"))
    r, g, b = rows[(y0 + y1) // 2][x]
    assert r > g + 20 and r > b + 20, (r, g, b)


def test_host_map_stays_small(tmp_path):
    """Thousands of objects collapse into pixel boxes: the file stays small and
    every node is labelled."""
    snap = host()
    svg = memory_map(snap, checks())
    assert len(svg) < 400_000
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert {"node 0", "node 1", "node 2", "node 3"} <= set(texts)
    ET.fromstring(svg)

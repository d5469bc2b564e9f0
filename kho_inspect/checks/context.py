# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Rule context
------------

The ``kho_inspect.checks.context`` module gives rules what they share: the
snapshots and the boot log behind accessors that raise
:class:`~kho_inspect.checks.registry.Skip` with a standard reason when a
section is missing, the scratch classes, and :meth:`Context.evidence`, which
names an offending range's memblock flags, owner and scratch class.

It also has :class:`Spans`, the objects a placement rule judges (preserved
ranges, tree pages, gigantic pages, ...) sorted once, with the two sweeps
every such rule is made of: the objects that overlap a zone (O(m log n + k)
for m zone ranges and k hits) and those it does not cover (O(n log m)),
however many bytes they describe. Owners are named, and evidence is built,
only for the objects reported, at most :data:`MAX_EVIDENCE` per rule.
"""

from bisect import bisect_left, bisect_right
from itertools import accumulate
from operator import itemgetter
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from kho_inspect.bootlog import classify_range
from kho_inspect.checks.registry import Skip
from kho_inspect.model.bootlog import BootLog
from kho_inspect.model.check import Evidence
from kho_inspect.model.memblock import MemblockState, Region
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.scratch import ScratchReport
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.model.trace import TraceRun
from kho_inspect.ranges import Range, RangeMap, RangeSet

__all__ = (
    "GIB",
    "NEEDS_BOOTLOG",
    "NEEDS_PREVIOUS",
    "NEEDS_TRACE",
    "COLD_BOOT",
    "NOT_BUILT",
    "MAX_EVIDENCE",
    "Context",
    "Spans",
    "busy_blocks",
    "mib",
    "more_evidence",
    "preserved_spans",
    "ranges_text",
    "tree_spans",
)

GIB = 1 << 30

MAX_EVIDENCE = 1000
"""Offending objects listed per rule; beyond, one evidence counts the rest."""

NEEDS_PREVIOUS = "needs --previous (the snapshot kernel N saved before kexec)"
NEEDS_BOOTLOG = "needs --bootlog or --dmesg (a kernel log recorded with memblock=debug)"
NEEDS_TRACE = "needs --trace (a run of kho-inspect trace saved with -o FILE)"
NOT_BUILT = "this kernel was built without CONFIG_KEXEC_HANDOVER"

SECTION_WORDS = {
    "status": "the KHO status", "activation": "whether KHO is active",
    "scratch": "KHO scratch", "preserved_out": "the outgoing preserved memory",
    "preserved_in": "the incoming preserved memory", "fdt_out": "the outgoing root FDT",
    "fdt_in": "the incoming root FDT", "hugetlb": "the gigantic hugetlb pages",
    "image": "the kernel image's range", "memblock": "memblock",
}
"""How a reason names a snapshot section."""

KHO_SECTIONS = ("status", "scratch", "preserved_out", "preserved_in", "fdt_out", "fdt_in")
"""Sections only a kernel built with KHO has."""
COLD_BOOT = "this kernel was cold booted (kho_in.fdt_phys is 0): nothing was handed over to it"


def mib(n: int) -> str:
    """Bytes as the kernel logs scratch sizes (``%lluMiB``), exact below 1 MiB."""
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


# --- sweeps -------------------------------------------------------------------


class _Zone:
    """A :class:`RangeSet` with its bases indexed once, for many lookups."""

    def __init__(self, zone: RangeSet) -> None:
        self.ranges = zone.ranges
        self.bases = [r.base for r in self.ranges]
        self.ends = [r.end for r in self.ranges]

    def pieces(self, rng: Range) -> List[Range]:
        """The parts of ``rng`` inside the zone."""
        i = max(bisect_right(self.bases, rng.base) - 1, 0)
        out = []
        while i < len(self.ranges) and self.ranges[i].base < rng.end:
            piece = self.ranges[i].intersect(rng)
            if piece:
                out.append(piece)
            i += 1
        return out

    def gaps(self, rng: Range) -> List[Range]:
        """The parts of ``rng`` outside the zone."""
        out, start = [], rng.base
        for piece in self.pieces(rng):
            if piece.base > start:
                out.append(Range.from_bounds(start, piece.base))
            start = piece.end
        if start < rng.end:
            out.append(Range.from_bounds(start, rng.end))
        return out

    def covers(self, start: int, end: int) -> bool:
        # The zone is merged, so a covered span lies in one of its ranges.
        i = bisect_right(self.bases, start) - 1
        return i >= 0 and end <= self.ends[i]


class Spans:
    """Objects with a physical range each, sorted once for sweeps.

    Built from ``(base, size, tag)`` triples; ``describe(tag)`` names an
    object's owner, and is called only for the objects a rule reports, so a
    rule over a million preserved ranges builds no million strings.
    """

    def __init__(self, items: Iterable[Tuple[int, int, Any]],
                 describe: Callable[[Any], str] = str) -> None:
        rows = sorted((t for t in items if t[1] > 0), key=itemgetter(0))
        self.starts = [r[0] for r in rows]
        self.ends = [r[0] + r[1] for r in rows]
        self.tags = [r[2] for r in rows]
        self.describe = describe
        # reach[i]: the highest end among the first i + 1 objects.
        self.reach = list(accumulate(self.ends, max))

    @classmethod
    def of(cls, items: Iterable[Tuple[Range, str]]) -> "Spans":
        """Spans of ``(range, owner)`` pairs (few objects, owners known)."""
        return cls(((r.base, r.size, o) for r, o in items), lambda o: o)

    def __len__(self) -> int:
        return len(self.starts)

    def range(self, i: int) -> Range:
        return Range.from_bounds(self.starts[i], self.ends[i])

    def owner(self, i: int) -> str:
        return self.describe(self.tags[i])

    def overlapping(self, zone: RangeSet) -> List[int]:
        """Indices of the objects sharing bytes with ``zone``, in address order.

        O(m log n + k) for m zone ranges and k hits.
        """
        found: List[int] = []
        for z in zone:
            lo = bisect_right(self.reach, z.base)
            hi = bisect_left(self.starts, z.end)
            found.extend(i for i in range(lo, hi) if self.ends[i] > z.base)
        return sorted(set(found)) if len(zone) > 1 else found

    def outside(self, zone: RangeSet) -> List[int]:
        """Indices of the objects not wholly inside ``zone``; O(n log m)."""
        z = _Zone(zone)
        return [i for i, (s, e) in enumerate(zip(self.starts, self.ends))
                if not z.covers(s, e)]


def busy_blocks(report: PreservedReport) -> RangeSet:
    """The 1 GiB blocks ``kho_extend_scratch()`` finds busy in a kernel's
    outgoing tree: those a preserved range or a radix page touches."""
    shift = GIB.bit_length() - 1
    blocks = {p >> shift for p in report.tree_pages}
    for phys, size, _ in report.ranges:
        first, last = phys >> shift, (phys + size - 1) >> shift
        blocks.add(first)
        if last != first:
            blocks.update(range(first + 1, last + 1))
    runs: List[List[int]] = []
    for b in sorted(blocks):
        if runs and runs[-1][1] == b:
            runs[-1][1] = b + 1
        else:
            runs.append([b, b + 1])
    return RangeSet(Range.from_bounds(a << shift, b << shift) for a, b in runs)


def preserved_spans(report: PreservedReport, who: str) -> Spans:
    """The preserved ranges of ``report``, owned by ``who`` (``"N"``,
    ``"this kernel"``), tagged with their order."""
    def describe(order: Optional[int]) -> str:
        return f"preserved by {who}" + ("" if order is None else f", order {order}")

    return Spans(report.ranges, describe)


def tree_spans(report: PreservedReport, who: str) -> Spans:
    """The pages of ``report``'s radix tree."""
    size = 1 << report.page_shift
    return Spans(((p, size, None) for p in report.tree_pages),
                 lambda _: f"radix tree page of {who}")


# --- the context ----------------------------------------------------------------


class Context:
    """What one run of the rules reads.

    :param current: the kernel being checked.
    :param previous: the snapshot kernel N saved before it kexec'd into
        ``current``.
    :param bootlog: ``current``'s boot log, parsed.
    :param trace: a saved ``kho-inspect trace`` run on ``current``.
    """

    def __init__(self, current: Snapshot, previous: Optional[Snapshot] = None,
                 bootlog: Optional[BootLog] = None, trace: Optional[TraceRun] = None) -> None:
        self.cur = current
        self.prev = previous
        self.log = bootlog
        self.trace_run = trace
        self._memory: Optional[RangeMap[Region]] = None
        self._reserved: Optional[RangeMap[Region]] = None
        self._names: Optional[List[Tuple[Range, str]]] = None
        self._spans: Dict[Tuple[int, str, bool], Spans] = {}
        self._busy: Dict[int, RangeSet] = {}

    # --- requirements: return the section or skip -----------------------------

    def previous(self) -> Snapshot:
        if self.prev is None:
            raise Skip(NEEDS_PREVIOUS)
        return self.prev

    def bootlog(self) -> BootLog:
        if self.log is None:
            raise Skip(NEEDS_BOOTLOG)
        return self.log

    def trace(self) -> TraceRun:
        if self.trace_run is None:
            raise Skip(NEEDS_TRACE)
        return self.trace_run

    def kho_boot(self) -> None:
        """Skip unless the current kernel was booted through KHO."""
        act = self.cur.activation
        if act is not None and act.state == "not built":
            raise Skip(NOT_BUILT)
        if self.cur.kho_boot is None:
            raise Skip(f"whether this kernel was booted through KHO is unknown: "
                       f"{self.cur.why_missing('status')}")
        if not self.cur.kho_boot:
            raise Skip(COLD_BOOT)

    def memblock(self) -> MemblockState:
        if self.cur.memblock is None:
            raise Skip(f"memblock not kept on this kernel: {self.cur.why_missing('memblock')}")
        return self.cur.memblock

    def scratch(self, snap: Optional[Snapshot] = None) -> ScratchReport:
        value = self.section("scratch", snap)
        assert isinstance(value, ScratchReport)
        return value

    def section(self, name: str, snap: Optional[Snapshot] = None) -> object:
        """``snap.<name>`` (the current snapshot by default), or skip with why it is missing."""
        snap = snap or self.cur
        value = getattr(snap, name)
        if value is None:
            act = snap.activation
            if name in KHO_SECTIONS and act is not None and act.state == "not built":
                raise Skip(NOT_BUILT)
            who = "this kernel" if snap is self.cur else "the previous kernel"
            raise Skip(f"{SECTION_WORDS.get(name, name)} of {who} is not known: "
                       f"{snap.why_missing(name)}")
        return value

    def preserved_out(self, snap: Optional[Snapshot] = None) -> PreservedReport:
        value = self.section("preserved_out", snap)
        assert isinstance(value, PreservedReport)
        return value

    def extended_classes(self) -> ScratchReport:
        """The scratch report, when its extended and unpreserved classes are
        known (they come from memblock flags)."""
        scratch = self.scratch()
        if scratch.memblock_error is not None or self.cur.memblock is None:
            reason = scratch.memblock_error or self.cur.why_missing("memblock")
            raise Skip("memblock not kept on this kernel: extended scratch is known only from "
                       f"the memblock flags ({reason})")
        return scratch

    def spans(self, report: PreservedReport, who: str, pages: bool = False) -> Spans:
        """:func:`preserved_spans` (``pages``: :func:`tree_spans`) of a report, built once."""
        key = (id(report), who, pages)
        if key not in self._spans:
            self._spans[key] = (tree_spans if pages else preserved_spans)(report, who)
        return self._spans[key]

    def busy_blocks(self, report: PreservedReport) -> RangeSet:
        """:func:`busy_blocks` of a report, computed once."""
        if id(report) not in self._busy:
            self._busy[id(report)] = busy_blocks(report)
        return self._busy[id(report)]

    # --- evidence ------------------------------------------------------------

    def _maps(self) -> Tuple[RangeMap[Region], RangeMap[Region]]:
        if self._memory is None or self._reserved is None:
            self._memory, self._reserved = RangeMap(), RangeMap()
            state = self.cur.memblock
            if state is not None:
                try:
                    self._memory = state.memory.region_map()
                    self._reserved = state.reserved.region_map()
                except (KeyError, ValueError):
                    pass  # overlapping regions: memblock-sane reports them
        return self._memory, self._reserved

    def flags_at(self, rng: Range) -> Tuple[str, ...]:
        """The memblock flag names of the memory and reserved regions under ``rng``."""
        names: List[str] = []
        for rmap in self._maps():
            for _, region in rmap.overlapping(rng):
                for flag in region.flags or ():
                    if flag not in names:
                        names.append(flag)
        order = self.cur.memblock_flags.values
        return tuple(sorted(names, key=lambda n: (order.get(n, 1 << 62), n)))

    def klass(self, rng: Range) -> Optional[str]:
        """The scratch class ``rng`` lies in, ``None`` without a scratch report."""
        if self.cur.scratch is None:
            return None
        c = self.cur.scratch.classes
        classes = [("original", c.original)]
        if self.cur.memblock is not None:
            # Where the kernel has a separate flag, its memory is "unpreserved".
            classes.append(("unpreserved", c.unpreserved) if c.unpreserved_flag
                           else ("extended", c.extended))
        return classify_range(rng, classes)

    def name_of(self, rng: Range) -> Optional[str]:
        """What the current kernel knows ``rng`` to belong to, if anything:
        a ``reserve_mem`` region, a KHO blob, the image, the initrd."""
        if self._names is None:
            self._names = _named_ranges(self.cur)
        return next((name for r, name in self._names if r.overlaps(rng)), None)

    def evidence(self, what: str, rng: Optional[Range] = None, owner: Optional[str] = None,
                 expected: object = None, found: object = None,
                 lines: Sequence[str] = (), name: bool = True,
                 flags: Optional[Sequence[str]] = None) -> Evidence:
        """An :class:`Evidence` with the flags and class of ``rng`` filled in.

        :param name: refine ``owner`` with what the range is known to be
            (``reserve_mem 'foo'``).
        :param flags: the flags to show, when the rule knows them better than
            memblock (a boot log's reservation flags).
        """
        if rng is not None and name:
            known = self.name_of(rng)
            if known and known != owner:
                owner = f"{known} ({owner})" if owner else known
        return Evidence(
            what=what,
            range=rng,
            owner=owner,
            klass=None if rng is None else self.klass(rng),
            flags=tuple(flags) if flags is not None else (
                () if rng is None else self.flags_at(rng)),
            expected=expected,
            found=found,
            lines=tuple(lines),
        )

    def hits(self, spans: Sequence[Spans], zone: RangeSet,
             what: Callable[[Range, str, List[Range]], str]) -> List[Evidence]:
        """Evidence for every object that overlaps ``zone`` (at most
        :data:`MAX_EVIDENCE`, then one that counts the rest)."""
        z = _Zone(zone)
        found = [(s, i) for s in spans for i in s.overlapping(zone)]
        return self._report(found, lambda s, i: z.pieces(s.range(i)), what)

    def misses(self, spans: Sequence[Spans], zone: RangeSet,
               what: Callable[[Range, str, List[Range]], str]) -> List[Evidence]:
        """Evidence for every object not wholly inside ``zone`` (capped like :meth:`hits`)."""
        z = _Zone(zone)
        found = [(s, i) for s in spans for i in s.outside(zone)]
        return self._report(found, lambda s, i: z.gaps(s.range(i)), what)

    def _report(self, found: Sequence[Tuple[Spans, int]],
                parts: Callable[[Spans, int], List[Range]],
                what: Callable[[Range, str, List[Range]], str]) -> List[Evidence]:
        out = []
        for s, i in found[:MAX_EVIDENCE]:
            rng, owner = s.range(i), s.owner(i)
            out.append(self.evidence(what(rng, owner, parts(s, i)), rng, owner))
        if len(found) > MAX_EVIDENCE:
            out.append(more_evidence(len(found)))
        return out


def more_evidence(total: int) -> Evidence:
    """The evidence that stands for the offending objects beyond :data:`MAX_EVIDENCE`."""
    return Evidence(f"{total - MAX_EVIDENCE} more offending objects are not listed "
                    f"({total} in all)", found=total)


def _named_ranges(snap: Snapshot) -> List[Tuple[Range, str]]:
    named: List[Tuple[Range, str]] = []
    for entry in snap.reserve_mem:
        if entry.size:
            named.append((Range(entry.start, entry.size), f"reserve_mem '{entry.name}'"))
    for fdt in (snap.fdt_out, snap.fdt_in):
        for blob in fdt.blobs if fdt is not None else ():
            if blob.range:
                named.append((blob.range, f"KHO blob '{blob.name}' ({fdt.direction})"))
    if snap.image:
        named.append((snap.image, "kernel image"))
    if snap.initrd:
        named.append((snap.initrd, "initrd"))
    return named


def ranges_text(parts: Sequence[Range]) -> str:
    """``[a-b], [c-d]`` (the first four, then a count)."""
    shown = ", ".join(str(p) for p in parts[:4])
    return shown + (f" and {len(parts) - 4} more" if len(parts) > 4 else "")

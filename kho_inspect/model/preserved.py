# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Preserved-memory model
----------------------

The ``kho_inspect.model.preserved`` module holds what ``kho-inspect kho
preserved`` reports: the memory a kernel preserves across a Kexec HandOver,
read from one source (``out``, ``reserved``, ``pages`` or ``snapshot``, see
:mod:`kho_inspect.preserved`), as ranges with their order, a per-order
histogram and the pages of the radix tree itself. Its JSON is also the
snapshot format: a report saved in kernel N reads back in kernel N+1.
"""

from dataclasses import field
from typing import Any, Dict, Mapping, Optional, Tuple

from kho_inspect.frozen import frozen
from kho_inspect.ranges import Range, RangeSet

__all__ = ("TREELESS_SOURCES", "PreservedRow", "PreservedReport")

TREELESS_SOURCES = ("pages", "reserved")
"""Sources that find preserved memory without the radix tree."""

PreservedRow = Tuple[int, int, Optional[int]]
"""``(phys, size, order)``; the order is ``None`` where the source has none."""


@frozen
class PreservedReport:
    """Preserved memory from one source, as ``kho preserved`` reports it.

    :param ranges: ``(phys, size, order)``, coalesced per order.
    :param tree_pages: pages of the radix tree itself (source ``out``).
    :param histogram: order -> number of preserved blocks.
    :param keys: raw radix keys (``--raw``), in walk order.
    :param root: physical address of the root table (source ``out``).
    :param kernel: ``UTS_RELEASE`` of the kernel that was read.
    :param origin: for snapshots: the file and the source and kernel it was
        taken from.
    """

    source: str
    ranges: Tuple[PreservedRow, ...]
    tree_pages: Tuple[int, ...] = ()
    histogram: Mapping[int, int] = field(default_factory=dict)
    keys: Optional[Tuple[int, ...]] = None
    root: Optional[int] = None
    kernel: Optional[str] = None
    page_shift: int = 12
    notes: Tuple[str, ...] = ()
    origin: Optional[Mapping[str, Any]] = None

    def range_set(self) -> RangeSet:
        """Every preserved byte, orders merged."""
        return RangeSet(Range(phys, size) for phys, size, _ in self.ranges)

    @property
    def tree_known(self) -> bool:
        """Whether this source reads the radix tree (``out``, ``in``); the
        ``pages`` and ``reserved`` sources never see its pages."""
        return self.source not in TREELESS_SOURCES

    def totals(self) -> Dict[str, Any]:
        """Counts for the summary; ``tree_pages``/``tree_bytes`` are ``None``
        where the source does not read the tree (not 0)."""
        page = 1 << self.page_shift
        tree = len(self.tree_pages) if self.tree_known else None
        by_order = {
            str(order): {"blocks": n, "bytes": n << (self.page_shift + order)}
            for order, n in self.histogram.items()
        }
        return {
            "ranges": len(self.ranges),
            "blocks": sum(self.histogram.values()) if self.histogram else None,
            "bytes": sum(size for _, size, _ in self.ranges),
            "tree_pages": tree,
            "tree_bytes": None if tree is None else tree * page,
            "by_order": by_order,
        }

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "source": self.source,
            "kernel": self.kernel,
            "page_shift": self.page_shift,
            "root": self.root,
            "ranges": [{"phys": p, "size": s, "order": o} for p, s, o in self.ranges],
            "tree_pages": list(self.tree_pages),
            "histogram": {str(o): n for o, n in self.histogram.items()},
            "totals": self.totals(),
            "notes": list(self.notes),
        }
        if self.keys is not None:
            out["keys"] = list(self.keys)
        if self.origin is not None:
            out["snapshot"] = dict(self.origin)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], origin: Optional[Mapping[str, Any]] = None
                  ) -> "PreservedReport":
        """Rebuild a report from :meth:`to_json` output.

        :param origin: the snapshot's origin (default: the ``"snapshot"`` key, if any).
        :raises KeyError, TypeError, ValueError: the object has another shape.
        """
        ranges = tuple(
            (int(r["phys"]), int(r["size"]), None if r.get("order") is None else int(r["order"]))
            for r in obj["ranges"]
        )
        keys = obj.get("keys")
        if origin is None and obj.get("snapshot") is not None:
            origin = dict(obj["snapshot"])
        return cls(
            source=str(obj["source"]),
            ranges=ranges,
            tree_pages=tuple(int(p) for p in obj.get("tree_pages", ())),
            histogram={int(o): int(n) for o, n in obj.get("histogram", {}).items()},
            keys=None if keys is None else tuple(int(k) for k in keys),
            root=None if obj.get("root") is None else int(obj["root"]),
            kernel=obj.get("kernel"),
            page_shift=int(obj.get("page_shift", 12)),
            notes=tuple(str(n) for n in obj.get("notes", ())),
            origin=origin,
        )

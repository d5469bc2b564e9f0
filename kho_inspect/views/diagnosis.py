# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO activation view
-------------------

Sections that say whether KHO is active and, when it was asked for and
turned itself off, why: the state and its reason, the kernel's own log lines,
and the scratch sizing (what each area needed against what memory offered,
and the reservations that drove the size). ``kho status`` shows them, and
``kho scratch`` shows them instead of a scratch array that is not scratch.
"""

from typing import Any, List, Optional, Sequence

from kho_inspect.model.diagnosis import DEFAULT_SCRATCH_SCALE, KhoActivation, ScratchSizing
from kho_inspect.render import Section, hex_or_none, human_size

__all__ = ("activation_rows", "sections", "sizing_sections")


def _size(n: Optional[int]) -> str:
    return "unknown" if n is None else human_size(n)


def _reserved(value: Optional[bool]) -> str:
    return {True: "yes", False: "FAILED", None: "not tried"}[value]


def _luo(value: Optional[bool]) -> str:
    return {True: "on", False: "off", None: "not built"}[value]


def activation_rows(act: KhoActivation) -> List[Sequence[Any]]:
    """``(item, value)`` rows: state, reason, what asked for KHO, LUO."""
    return [
        ("state", act.state),
        ("reason", act.reason),
        ("requested by", act.requested_by or "nothing"),
        ("LUO", _luo(act.luo)),
    ]


def _mode(sizing: ScratchSizing) -> str:
    if sizing.mode == "explicit" and sizing.explicit:
        low, glob, node = (human_size(x) for x in sizing.explicit)
        return f"kho_scratch={low},{glob},{node} (explicit sizes)"
    scale = sizing.scale if sizing.scale is not None else DEFAULT_SCRATCH_SCALE
    return (f"{scale}% of the memblock reservations flagged RSRV_KERN minus those flagged "
            "RSRV_HUGETLB (scratch_size_update())")


def sizing_sections(sizing: ScratchSizing) -> List[Section]:
    """The scratch sizing: one row per area, then the reservations that drove it."""
    needs = [(n.area, _size(n.needed), _size(n.available), _reserved(n.reserved),
              hex_or_none(n.addr)) for n in sizing.needs]
    notes = [f"Sized at {_mode(sizing)}."]
    total = sizing.needed
    if total is not None and sizing.memory:
        notes.append(f"All areas together: {human_size(total)}, "
                     f"{100 * total // sizing.memory}% of {human_size(sizing.memory)} of RAM.")
    elif sizing.memory:
        notes.append(f"RAM: {human_size(sizing.memory)}.")
    if sizing.kern_reserved is not None:
        notes.append(f"RSRV_KERN reservations: {human_size(sizing.kern_reserved)}, of which "
                     f"RSRV_HUGETLB: {_size(sizing.hugetlb_reserved)}.")
    notes.append(f"Source: {sizing.source}.")
    scale = sizing.scale if sizing.scale is not None else DEFAULT_SCRATCH_SCALE
    drivers = []
    for d in sizing.drivers:
        adds = human_size(d.size * scale // 100) if d.counted and sizing.mode == "scale" else "-"
        drivers.append((d.name, hex_or_none(d.base), human_size(d.size),
                        "-" if d.node is None else d.node, "yes" if d.counted else "no", adds))
    out = [Section("Scratch sizing", ("area", "needed", "largest free", "reserved", "at"),
                   needs, notes)]
    if drivers:
        out.append(Section("Reservations that drove the sizing",
                           ("reservation", "base", "size", "node", "counted", "adds"), drivers,
                           ["counted: scratch_size_update() counts it as kernel memory "
                            "(RSRV_KERN and not RSRV_HUGETLB); a hugetlb_cma= area is one."]))
    return out


def sections(act: KhoActivation) -> List[Section]:
    """The activation: state and reason, the kernel's lines, the sizing."""
    out = [Section("KHO activation", ("item", "value"), activation_rows(act))]
    if act.log:
        out.append(Section("Kernel log", block=list(act.log)))
    if act.sizing is not None:
        out += sizing_sections(act.sizing)
    return out

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
memblock view
-------------

Sections of ``kho-inspect memblock``: a summary (kernel, allocation
direction, ``current_limit``, stale or maintained), one table per memblock
type with the kernel's region indexes, totals per flag, the ``reserve_mem=``
table and the kernel's ``enum memblock_flags``. Ends are inclusive, as in
/sys/kernel/debug/memblock.
"""

from typing import Any, Callable, List, Optional, Sequence

from kho_inspect.model.memblock import FlagTable, MemblockState, MemblockType, Region
from kho_inspect.render import Section, human_size

__all__ = ("flags_section", "sections")

_ALLOC_ANYWHERE = ((1 << 64) - 1, (1 << 32) - 1)  # MEMBLOCK_ALLOC_ANYWHERE, (~(phys_addr_t)0)


def _title(t: MemblockType) -> str:
    symbol = t.name if t.name == "physmem" else f"memblock.{t.name}"
    return (f"{symbol}: {t.cnt} regions (max {t.max}), total_size {human_size(t.total_size)} "
            f"({t.total_size:#x})")


def _flags_text(region: Region) -> str:
    return "|".join(region.flags) or "NONE"


def _region_row(index: int, r: Region) -> Sequence[Any]:
    end = f"{r.end - 1:#018x}" if r.size else "-"
    return (index, f"{r.base:#018x}", end, human_size(r.size), f"{r.size:#x}",
            "-" if r.nid is None else r.nid, _flags_text(r))


def _regions(t: MemblockType, flag: Optional[str]) -> Section:
    # The kernel's index is kept when --flag hides regions (as debugfs numbers them).
    rows = [_region_row(i, r) for i, r in enumerate(t.regions)
            if flag is None or r.has_flag(flag)]
    notes = [f"Only regions with {flag} are shown."] if flag else []
    return Section(_title(t), ("#", "base", "end", "size", "bytes", "nid", "flags"), rows, notes)


def _flag_order(flags: FlagTable) -> Callable[[str], Any]:
    # "all" first, then by the enumerator's value; unnamed bits by their value.
    def key(name: str) -> Any:
        if name == "all":
            return (-1, name)
        if flags.has(name):
            return (flags.value(name), name)
        return (int(name, 16) if name.startswith("0x") else 0, name)

    return key


def _totals(state: MemblockState, names: Sequence[str], flag: Optional[str]) -> Section:
    rows: List[Sequence[Any]] = []
    for name in names:
        totals = state.types[name].select(flag).totals()
        for key in sorted(totals, key=_flag_order(state.flags)):
            count, size = totals[key]
            rows.append((name, key, count, human_size(size), f"{size:#x}"))
    notes = ["A region with several flags counts under each of them."]
    return Section("Totals", ("type", "flag", "regions", "size", "bytes"), rows, notes)


def _limit(value: Optional[int]) -> str:
    if value is None:
        return "-"
    return f"{value:#x}" + (" (MEMBLOCK_ALLOC_ANYWHERE)" if value in _ALLOC_ANYWHERE else "")


def _summary(state: MemblockState, release: Optional[str]) -> Section:
    direction = {None: "-", True: "bottom-up", False: "top-down"}[state.bottom_up]
    rows: List[Sequence[Any]] = [
        ("kernel", release or "unknown"),
        ("allocation direction", f"{direction} (memblock.bottom_up)"),
        ("current_limit", _limit(state.current_limit)),
        ("state", "STALE" if state.stale else "maintained"),
    ]
    notes = []
    if state.stale:
        notes.append(f"Do not trust these arrays ({state.stale_reason}); they are shown because "
                     "of --allow-stale.")
    notes += [f"Note: {note}." for note in state.extra.get("notes", ())]
    return Section("memblock", ("item", "value"), rows, notes)


def flags_section(flags: FlagTable) -> Section:
    """The kernel's ``enum memblock_flags``, names without ``MEMBLOCK_``, by value."""
    rows: List[Sequence[Any]] = [(name, f"{value:#x}") for name, value in flags.to_json().items()]
    return Section("enum memblock_flags", ("name", "value"), rows)


def _reserve_mem(state: MemblockState) -> Section:
    rows = [(r.name, f"{r.start:#018x}", f"{r.start + r.size - 1:#018x}", human_size(r.size),
             f"{r.size:#x}") for r in state.reserve_mem]
    return Section("reserve_mem= regions (reserved_mem_table)",
                   ("name", "start", "end", "size", "bytes"), rows)


def sections(state: MemblockState, names: Sequence[str], flag: Optional[str] = None,
             release: Optional[str] = None) -> List[Section]:
    """The text/Markdown view: summary, one table per type, totals, reserve_mem=, flags."""
    return [_summary(state, release), *(_regions(state.types[n], flag) for n in names),
            _totals(state, names, flag), _reserve_mem(state), flags_section(state.flags)]

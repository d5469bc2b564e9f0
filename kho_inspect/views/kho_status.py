# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO status view
---------------

Sections of ``kho-inspect kho status``: KHO on or off, KHO or cold boot, the
kexec count, the ABI of both root FDTs, the scratch areas and LUO; the
kernel's ``enum memblock_flags``; the symbols found; notes.
"""

from typing import Any, List, Optional, Sequence, Tuple

from kho_inspect.model.kho import KhoStatus
from kho_inspect.render import Section, hex_or_none
from kho_inspect.views.memblock import flags_section

__all__ = ("sections",)


def _yes_no(value: Optional[bool], yes: str = "yes", no: str = "no") -> str:
    return "unknown" if value is None else (yes if value else no)


def _boot(st: KhoStatus) -> str:
    if not st.kho_boot:
        return "cold boot"
    return f"KHO boot (kho_in.fdt_phys = {hex_or_none(st.fdt_in_phys)})"


def _kexec(st: KhoStatus) -> str:
    count = "unknown" if st.kexec_count is None else str(st.kexec_count)
    if st.previous_release:
        count += f", from {st.previous_release}"
    if st.next_kexec_count is not None:
        count += f" (the next kernel will be number {st.next_kexec_count})"
    return count


def _luo(st: KhoStatus) -> str:
    if st.luo is None:
        return "not built (CONFIG_LIVEUPDATE=n)"
    text = _yes_no(st.luo, "on", "off (boot with liveupdate=on)")
    if st.luo and st.liveupdate_num is not None:
        text += f", incoming live-update number {st.liveupdate_num}"
    return text


def _abi(compatible: Optional[str], mem_map: Optional[int]) -> str:
    if compatible is None:
        return "-"
    return f"{compatible}, preserved-memory-map {hex_or_none(mem_map)}"


def _rows(st: KhoStatus) -> List[Tuple[str, str]]:
    rows = [
        ("kernel", st.release or "unknown"),
        ("KHO", _yes_no(st.enabled, "enabled", "disabled")),
        ("boot", _boot(st)),
        ("kexec count", _kexec(st)),
        ("outgoing root FDT", _abi(st.compatible, st.mem_map_out)),
    ]
    if st.kho_boot:
        rows.append(("incoming root FDT", _abi(st.compatible_in, st.mem_map_in)))
    scratch = st.symbols.get("scratch")
    if scratch and st.enabled is False and not st.kho_boot:
        rows.append(("scratch areas", f"none: KHO is off ({scratch} is not scratch)"))
    elif scratch:
        count = "?" if st.scratch_areas is None else str(st.scratch_areas)
        rows.append(("scratch areas", f"{count} ({scratch})"))
    rows.append(("LUO", _luo(st)))
    return rows


def sections(st: KhoStatus) -> List[Section]:
    """The text/Markdown view of a status."""
    symbols: List[Sequence[Any]] = [(role, name or "not found")
                                    for role, name in st.symbols.items()]
    out = [
        Section("KHO status", ("item", "value"), list(_rows(st))),
        flags_section(st.memblock_flags),
        Section("Symbols", ("role", "found as"), symbols),
    ]
    if st.notes:
        out.append(Section("Notes", notes=list(st.notes)))
    return out

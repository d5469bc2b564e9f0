"""``kho-inspect memblock``: memblock.memory, memblock.reserved, physmem and reserve_mem=."""

from typing import Any, Callable, List, Optional, Sequence

import click

from kho_inspect.cli import Session, output_options, pass_session
from kho_inspect.errors import NotInKernelError
from kho_inspect.memblock import read_memblock
from kho_inspect.model import FlagTable, MemblockState, MemblockType, Region
from kho_inspect.render import Section, emit, human_size
from kho_inspect.target import kernel_release

__all__ = ("memblock", "sections", "flag_name", "flags_section")

TYPE_CHOICES = ("memory", "reserved", "physmem", "all")

MEMBLOCK_EPILOG = """\b
Examples:
  kho-inspect memblock                       # memory and reserved, flags by name, totals
  kho-inspect memblock --type reserved --flag RSRV_NOINIT   # after a KHO boot: what N preserved
  kho-inspect memblock --type memory --flag KHO_SCRATCH --json
  kho-inspect --core vmcore --vmlinux vmlinux memblock --format markdown
  kho-inspect memblock --allow-stale         # x86 without ARCH_KEEP_MEMBLOCK: as boot left it
\b
Flags are the kernel's enum memblock_flags names without MEMBLOCK_ (0x80 is
RSRV_HUGETLB in Linux 7.3 but KHO_SCRATCH_EXT in the v1 series); a set bit the
enum does not name shows in hex (0x100). --flag NONE selects regions without
flags. Ends are inclusive, as in /sys/kernel/debug/memblock; nid "-" is no node.
\b
Only kernels with CONFIG_ARCH_KEEP_MEMBLOCK (arm64, powerpc, ...; x86 only with
CONFIG_INTEL_TDX_HOST) maintain memblock after boot. Elsewhere the arrays are
frozen or freed, and kho-inspect refuses them unless --allow-stale is given.
"""

_ALLOC_ANYWHERE = ((1 << 64) - 1, (1 << 32) - 1)  # MEMBLOCK_ALLOC_ANYWHERE, (~(phys_addr_t)0)


def flag_name(flags: FlagTable, given: str) -> str:
    """The flag name ``given`` means for this kernel (case and a ``MEMBLOCK_``
    prefix ignored; a single bit in hex is accepted and named if the enum
    names it).

    :raises NotInKernelError: the kernel has no such flag.
    """
    name = given.strip().upper()
    name = name[len("MEMBLOCK_"):] if name.startswith("MEMBLOCK_") else name
    if name == "NONE" or flags.has(name):
        return name
    try:
        value = int(name, 16) if name.startswith("0X") else 0
    except ValueError:
        value = 0
    if value and value & (value - 1) == 0:
        return flags.decode(value)[0]
    known = ", ".join(flags.to_json()) or "none (its debug info lacks enum memblock_flags)"
    raise NotInKernelError(
        f"This kernel's enum memblock_flags has no flag {given!r}: its flags are {known} "
        "(give a bit it does not name in hex, such as 0x100)."
    )


def _type_names(state: MemblockState, choice: str) -> List[str]:
    if choice == "all":
        return list(state.types)
    if choice not in state.types:
        raise NotInKernelError(
            f"This kernel has no {choice} (it needs CONFIG_HAVE_MEMBLOCK_PHYS_MAP, which only "
            "s390 selects): use --type memory, reserved or all."
        )
    return [choice]


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


@click.command(epilog=MEMBLOCK_EPILOG)
@click.option("--type", "type_", type=click.Choice(TYPE_CHOICES), default="all",
              show_default=True, help="Which memblock type to show (physmem: s390 only).")
@click.option("--flag", metavar="NAME",
              help="Only regions with this flag: an enum memblock_flags name without "
                   "MEMBLOCK_ (KHO_SCRATCH), NONE, or a bit in hex.")
@click.option("--allow-stale", is_flag=True,
              help="Show arrays that memblock discarded after boot (or that look corrupt), "
                   "marked stale, instead of refusing.")
@output_options
@pass_session
def memblock(session: Session, fmt: str, type_: str, flag: Optional[str],
             allow_stale: bool) -> None:
    """memblock.memory, memblock.reserved and physmem with flags by name, and reserve_mem=."""
    prog = session.program()
    state = read_memblock(prog, allow_stale=allow_stale)
    names = _type_names(state, type_)
    wanted = flag_name(state.flags, flag) if flag is not None else None
    emit(fmt, state.select(names, wanted).to_json(),
         lambda: sections(state, names, wanted, kernel_release(prog)))

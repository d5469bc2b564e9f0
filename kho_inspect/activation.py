# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Why KHO is off
--------------

The ``kho_inspect.activation`` module decides whether Kexec HandOver works on
a kernel and, when it does not, why: :func:`decide` turns plain facts
(:class:`ActivationInputs`, gathered from a target by
:mod:`kho_inspect.diagnosis`) into a
:class:`~kho_inspect.model.diagnosis.KhoActivation` that tells apart a kernel
built without KHO, one where nobody asked for it, one where it was asked for
and turned itself off (and why), and one where it is active.

KHO turns itself off in three places of Linux 7.3
(kernel/liveupdate/kexec_handover.c, docs/kernel/kho.md#scratch-reservation):

* ``kho_reserve_scratch()`` (:832-907) cannot reserve the scratch array or
  one of the areas; it logs ``Failed to reserve <area> ...`` and ``Failed to
  reserve scratch area, disabling kexec handover``, frees what it got, but
  leaves ``kho_scratch``/``kho_scratch_cnt`` describing the freed attempt
  (the entries after the failing one are zero);
* ``kho_init()`` (:1819-1899) fails after the areas were reserved; it gives
  them back to the page allocator and logs nothing;
* ``kho_memory_init()`` (:1941-1953) in a kdump kernel (``disabled in the
  kdump kernel``).

The sizing that makes the first one fail is rebuilt by
:func:`scratch_sizing` the way ``scratch_size_update()`` (:756-787) and
``scratch_size_node()`` (:789-805) compute it: ``scale`` percent (200 unless
``kho_scratch=``) of the memblock reservations flagged ``RSRV_KERN`` minus
those flagged ``RSRV_HUGETLB``, the lowmem area from those below
``ARCH_LOW_ADDRESS_LIMIT``, the global one from the rest, each rounded up to
``SCRATCH_ALIGNMENT_BYTES``. A ``hugetlb_cma=`` area is reserved
``RSRV_KERN`` (mm/cma.c, through ``memblock_alloc_range_nid()``), not
``RSRV_HUGETLB``, so it counts: ``hugetlb_cma=2G`` asks for 4 GiB more
scratch at the default scale.

Everything here is pure: facts in, a model object out.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from kho_inspect.errors import NotKhoKernelError
from kho_inspect.frozen import frozen
from kho_inspect.model.diagnosis import (
    DEFAULT_SCRATCH_SCALE,
    KhoActivation,
    ScratchNeed,
    ScratchSizing,
    SizingDriver,
)
from kho_inspect.model.memblock import MemblockState, Region, ReserveMem
from kho_inspect.model.snapshot import CmaRegion
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "ActivationInputs",
    "Reservation",
    "SCRATCH_ENTRY_SIZE",
    "cma_name",
    "decide",
    "inactive_error",
    "kernel_param",
    "kho_param",
    "log_lines",
    "scratch_sizing",
)

SCRATCH_ENTRY_SIZE = 16
"""``sizeof(struct kho_scratch)``: ``phys_addr_t addr, size``."""

DEFAULT_LOW_LIMIT = 0xFFFF_FFFF
"""``ARCH_LOW_ADDRESS_LIMIT`` where the architecture does not define it
(include/linux/memblock.h:398-400)."""

ALLOC_ANYWHERE = (1 << 64) - 1
"""``MEMBLOCK_ALLOC_ANYWHERE``: no limit."""

_KHO_C = "kernel/liveupdate/kexec_handover.c"

# kho_reserve_scratch()'s pr_err() lines (pr_fmt "KHO: "), :847, :859, :871, :889.
_FAILED_AREA = (
    (re.compile(r"Failed to reserve scratch array"), "array"),
    (re.compile(r"Failed to reserve lowmem scratch buffer"), "lowmem"),
    (re.compile(r"Failed to reserve global scratch buffer"), "global"),
    (re.compile(r"Failed to reserve nid (\d+) scratch buffer"), "node"),
)
_DISABLING = "Failed to reserve scratch area, disabling kexec handover"
_KDUMP = "disabled in the kdump kernel"
_SCALE = re.compile(r"KHO: scratch scale is (\d+)%")
_EXPLICIT = re.compile(r"KHO: scratch areas: lowmem: (\d+)MiB global: (\d+)MiB pernode: (-?\d+)MiB")
# memblock=debug request lines made by kho_reserve_scratch() (mm/memblock.c:1629, :1858).
# memblock=debug names the caller by its return address: where GCC inlines
# kho_reserve_scratch() into kho_memory_init(), its only caller (the 7.2 lab kernel:
# "kho_memory_init+0x235/0x4b0"), the lines name kho_memory_init, which on a cold boot
# does nothing else (see docs/kernel/kho.md#scratch-reservation).
_SCRATCH_CALLERS = ("kho_reserve_scratch+", "kho_memory_init+")
_REQUEST = re.compile(r"(memblock_\w+): (\d+) bytes .*\b(?:kho_reserve_scratch|kho_memory_init)\+")
_TIMESTAMP = re.compile(r"^\s*(?:<\d+>)?\s*\[[^\]]*\]\s?")
_LOG_PREFIXES = ("KHO: ", "liveupdate: ")
_MAX_LOG_LINES = 40


def _mib(n: int) -> str:
    # As the kernel logs scratch sizes (%lluMiB), exact below 1 MiB.
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def _round_up(n: int, alignment: Optional[int]) -> int:
    if not alignment:
        return n
    return -(-n // alignment) * alignment


@frozen
class Reservation:
    """A named physical reservation (a CMA area, a ``reserve_mem=`` region).

    :param name: ``"hugetlb_cma node 0"``, ``"CMA 'reserved'"``, ``"reserve_mem 'foo'"``.
    :param ranges: where it lies (a CMA area may span several ranges).
    :param node: its NUMA node, if it has one.
    """

    name: str
    ranges: Tuple[Range, ...]
    node: Optional[int] = None

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)

    @property
    def base(self) -> Optional[int]:
        return self.ranges[0].base if self.ranges else None


def cma_name(name: str, node: Optional[int]) -> str:
    """How a CMA area is named in the sizing: ``hugetlb_cma node N`` for the
    areas ``hugetlb_cma=`` makes (mm/hugetlb_cma.c names them ``hugetlb<nid>``),
    ``CMA 'name'`` for the others."""
    suffix = name[len("hugetlb"):]
    if name.startswith("hugetlb") and suffix.isdigit():
        return f"hugetlb_cma node {suffix}"
    return f"CMA '{name}'" + ("" if node is None else f" (node {node})")


def _reservations(cma: Sequence[CmaRegion], reserve: Sequence[ReserveMem]
                  ) -> List[Reservation]:
    # One per CMA area (its ranges grouped by name), one per reserve_mem= region.
    areas: Dict[Tuple[str, Optional[int]], List[Range]] = {}
    for region in cma:
        areas.setdefault((region.name, region.node), []).append(region.range)
    out = [Reservation(cma_name(name, node), tuple(ranges), node)
           for (name, node), ranges in areas.items()]
    out += [Reservation(f"reserve_mem '{r.name}'", (Range(r.start, r.size),)) for r in reserve
            if r.size]
    return out


@frozen
class ActivationInputs:
    """The facts :func:`decide` judges by; ``None`` is "unknown".

    :param kho_built: the debug info has ``kho_out`` (``CONFIG_KEXEC_HANDOVER``).
    :param kho_enable: ``static bool kho_enable`` now.
    :param fdt_out: ``kho_out.fdt`` (``void *``), set by a successful ``kho_init()``.
    :param kho_boot: ``kho_in.fdt_phys`` is set.
    :param command_line: ``saved_command_line``.
    :param enable_default: ``CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT`` from the
        in-kernel config (``None`` without ``CONFIG_IKCONFIG``).
    :param kdump: ``is_kdump_kernel()`` (``elfcorehdr_addr != ELFCORE_ADDR_MAX``).
    :param log: the kernel log, one line per entry, timestamps removed
        (:func:`log_lines`); ``None`` when it could not be read.
    :param log_from_boot: the log still starts at boot (its first lines were
        not overwritten).
    :param luo: ``luo_global.enabled`` (``None``: no LUO).
    :param array: ``kho_scratch[:kho_scratch_cnt]`` as ``(addr, size)``,
        whatever it describes (after a failure, the freed attempt).
    :param memory_nodes: ``node_states[N_MEMORY]``.
    :param memblock: memblock, when the kernel keeps it (never stale).
    :param cma: every range of every CMA area (``cma_areas[:cma_area_count]``).
    :param reserve_mem: the ``reserve_mem=`` regions.
    :param ram: System RAM when memblock is not kept (``/proc/iomem``).
    :param low_limit: ``ARCH_LOW_ADDRESS_LIMIT``.
    :param alignment: ``SCRATCH_ALIGNMENT_BYTES`` (``PAGE_SIZE << MAX_PAGE_ORDER``).
    :param memblock_note: why ``memblock`` is ``None``, for the sizing's source.
    """

    kho_built: bool
    kho_enable: Optional[bool] = None
    fdt_out: Optional[int] = None
    kho_boot: Optional[bool] = None
    command_line: Optional[str] = None
    enable_default: Optional[bool] = None
    kdump: Optional[bool] = None
    log: Optional[Tuple[str, ...]] = None
    log_from_boot: Optional[bool] = None
    luo: Optional[bool] = None
    array: Optional[Tuple[Tuple[int, int], ...]] = None
    memory_nodes: Tuple[int, ...] = (0,)
    memblock: Optional[MemblockState] = None
    cma: Tuple[CmaRegion, ...] = ()
    reserve_mem: Tuple[ReserveMem, ...] = ()
    ram: Optional[RangeSet] = None
    low_limit: int = DEFAULT_LOW_LIMIT
    alignment: Optional[int] = None
    memblock_note: Optional[str] = None
    notes: Tuple[str, ...] = field(default_factory=tuple)


# --- the command line and the log ------------------------------------------------


def kernel_param(command_line: Optional[str], name: str) -> Optional[str]:
    """The value of the last ``name=`` on a kernel command line (the one an
    ``early_param()`` ends up with), ``None`` if absent. Words after ``--``
    belong to init.

    >>> kernel_param("console=ttyS0 kho=on kho=0 -- kho=on", "kho")
    '0'
    """
    found = None
    for word in (command_line or "").split():
        if word == "--":
            break
        if word.startswith(name + "="):
            found = word[len(name) + 1:].strip('"')
    return found


def _kstrtobool(value: str) -> Optional[bool]:
    # lib/kstrtox.c kstrtobool(): y/t/1/on true, n/f/0/off false, else -EINVAL.
    if not value:
        return None
    first, second = value[0].lower(), value[1:2].lower()
    if first in "yt1":
        return True
    if first in "nf0":
        return False
    if first == "o" and second in ("n", "f"):
        return second == "n"
    return None


def kho_param(command_line: Optional[str]) -> Tuple[Optional[bool], Optional[str]]:
    """What ``kho=`` on ``command_line`` sets ``kho_enable`` to, and the word.

    ``(None, None)`` without a (valid) ``kho=``; ``kho_parse_enable()``
    ignores a value ``kstrtobool()`` rejects.
    """
    value = kernel_param(command_line, "kho")
    if value is None:
        return None, None
    enable = _kstrtobool(value)
    return enable, None if enable is None else f"kho={value}"


def log_lines(text: str) -> Tuple[str, ...]:
    """The lines of a kernel log with ``[ seconds]`` timestamps (and syslog
    levels) removed."""
    return tuple(_TIMESTAMP.sub("", line).rstrip() for line in text.splitlines())


def _explaining(log: Sequence[str]) -> Tuple[str, ...]:
    # The KHO and LUO lines, and memblock=debug lines from kho_reserve_scratch().
    lines = [line.strip() for line in log
             if line.lstrip().startswith(_LOG_PREFIXES)
             or any(caller in line for caller in _SCRATCH_CALLERS)]
    return tuple(lines[:_MAX_LOG_LINES])


def _failed_area(log: Sequence[str]) -> Optional[str]:
    for line in log:
        for pattern, area in _FAILED_AREA:
            match = pattern.search(line)
            if match:
                return f"node {match.group(1)}" if area == "node" else area
    return None


# --- the decision -----------------------------------------------------------------


def _requested_by(i: ActivationInputs, log: Sequence[str]) -> Tuple[Optional[str], str]:
    """What asked for KHO (``None``: nothing did) and, if nothing, why not."""
    enable, word = kho_param(i.command_line)
    if enable:
        return f"{word} on the command line", ""
    if enable is False:
        return None, f"KHO was turned off on the command line ({word})"
    default = "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT"
    # kho_enable can only be true, and kho_reserve_scratch() only tries, when
    # something asked for KHO; without kho= that is the config default.
    tried = any(_DISABLING in line for line in log) or _failed_area(log) is not None
    if i.enable_default or i.kho_enable or tried:
        return default, ""
    if i.command_line is None:
        return None, ("KHO is off (kho_enable is false) and the command line cannot be read, "
                      "so whether it was asked for is unknown")
    if i.enable_default is None:
        return None, ("KHO was not requested: the command line has no kho=on (the kernel "
                      f"config, which could set {default}, is not readable)")
    return None, f"KHO was not requested: the command line has no kho=on and {default} is off"


def decide(i: ActivationInputs) -> KhoActivation:
    """Whether KHO is active on the kernel ``i`` describes, and why not (pure).

    The states: ``"not built"`` (no ``kho_out``), ``"active"``
    (``kho_enable`` and ``kho_out.fdt`` set), ``"disabled"`` (asked for by
    ``kho=`` or ``CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT``, off now) and
    ``"not requested"``; a disabled KHO's reason comes from the kernel's own
    log where it has one, and its scratch sizing inputs come with it.
    """
    if not i.kho_built:
        return KhoActivation("not built", "This kernel was built without KHO "
                             "(CONFIG_KEXEC_HANDOVER=n): its debug info has no kho_out.")
    log = i.log or ()
    lines = _explaining(log)
    requested_by, why_not = _requested_by(i, log)
    if i.fdt_out and i.kho_enable is not False:
        how = "booted through KHO" if i.kho_boot else "cold booted"
        reason = f"KHO is active ({requested_by or 'requested'}; {how}): kho_out.fdt is set up."
        sizing = None if i.kho_boot else scratch_sizing(i, None)
        return KhoActivation("active", reason, requested_by, lines, sizing, i.luo)
    if requested_by is None:
        return KhoActivation("not requested", why_not + ".", None, lines, None, i.luo)
    reason, sizing = _disabled_reason(i, log)
    return KhoActivation("disabled", reason, requested_by, lines, sizing, i.luo)


def _disabled_reason(i: ActivationInputs, log: Sequence[str]
                     ) -> Tuple[str, Optional[ScratchSizing]]:
    if i.kho_enable:
        return ("kho_enable is set but kho_out.fdt is NULL: kho_init() (an fs_initcall) has not "
                "run yet; the target was read before the end of boot.", None)
    if i.kdump or any(_KDUMP in line for line in log):
        return ("KHO disabled itself: this is a kdump kernel, and kho_memory_init() turns KHO "
                f"off there ({_KHO_C}:1941-1946).", None)
    failed = _failed_area(log)
    if failed is not None:
        sizing = scratch_sizing(i, failed)
        return _reserve_failure(failed, sizing, i), sizing
    zero = _first_zero_entry(i)
    if zero is not None:
        # The log lost the line, but the array has it: the entries after the
        # failing one were never written.
        sizing = scratch_sizing(i, zero)
        text = _reserve_failure(zero, sizing, i)
        return (text[:-1] + "; the log no longer holds the failure line, kho_scratch[] "
                f"shows it: its {zero} entry is empty.", sizing)
    if i.array:
        sizing = scratch_sizing(i, None)
        return ("KHO disabled itself after reserving its scratch areas: kho_init() failed, "
                "which logs no reason (the radix tree, the outgoing FDT page or debugfs could "
                "not be set up), and gave the areas back to the page allocator.", sizing)
    if i.log is None:
        return ("KHO was requested but is off, and the kernel log cannot be read to say why.",
                None)
    if not i.log_from_boot:
        return ("KHO was requested but is off; the kernel log no longer reaches back to boot, "
                "where the reason was logged (boot with a larger log_buf_len=).", None)
    return ("KHO was requested but is off, and neither the kernel log nor kho_scratch[] "
            "says why.", None)


def _first_zero_entry(i: ActivationInputs) -> Optional[str]:
    # kho_reserve_scratch() fills kho_scratch[] in order and stops at a failure.
    names = _areas(i.memory_nodes)
    for index, (_, size) in enumerate(i.array or ()):
        if not size and index < len(names):
            return names[index]
    return None


def _reserve_failure(area: str, sizing: Optional[ScratchSizing],
                     i: ActivationInputs) -> str:
    need = next((n for n in sizing.needs if n.area == area), None) if sizing else None
    what = "scratch array" if area == "array" else f"{area} scratch area"
    if need is not None and need.needed is not None:
        what = f"{_mib(need.needed)} {what}"
    text = f"KHO disabled itself: kho_reserve_scratch() could not reserve the {what}"
    extra = []
    if need is not None and need.needed is None and sizing is not None:
        floor = _lower_bound(area, sizing, i)
        if floor:
            extra.append(f"its size is not logged, but the CMA and reserve_mem= areas alone "
                         f"made it at least {_mib(floor)}")
        else:
            extra.append("its size is not logged (boot with memblock=debug to see it)")
    if need is not None and need.available is not None:
        extra.append(f"the largest free range was {_mib(need.available)}"
                     + ("" if i.memblock is not None else " at most"))
    return text + (f" ({'; '.join(extra)})" if extra else "") + "."


def _lower_bound(area: str, sizing: ScratchSizing, i: ActivationInputs) -> int:
    # scratch_size_update(): global = scale% of what lies above the low limit,
    # lowmem = scale% of what lies below it; a node's area, of that node's.
    if sizing.mode != "scale":
        return 0
    scale = sizing.scale or DEFAULT_SCRATCH_SCALE
    counted = [r for r in _reservations(i.cma, i.reserve_mem)
               if any(d.name == r.name and d.counted for d in sizing.drivers)]
    total = 0
    for res in counted:
        for rng in res.ranges:
            low = rng.intersect(Range.from_bounds(0, i.low_limit)).size
            if area == "lowmem":
                total += low
            elif area == "global":
                total += rng.size - low
            elif area == f"node {res.node}":
                total += rng.size
    return _round_up(total * scale // 100, i.alignment) if total else 0


def inactive_error(act: KhoActivation, what: str) -> NotKhoKernelError:
    """The error for reading ``what`` from a kernel whose KHO is not active:
    the activation's reason, and what to do about it."""
    if act.state == "not built":
        advice = ""
    elif act.state == "not requested":
        advice = "boot with kho=on to use KHO"
    else:
        advice = "the kernel log lines and the scratch sizing are in the KHO status"
    return NotKhoKernelError(f"{what}: {act.reason.rstrip('.')}", advice, name=act.state)


# --- the sizing -----------------------------------------------------------------------


@dataclass
class _Sizes:
    # What each area needed and where the number came from.
    needed: Dict[str, int] = field(default_factory=dict)
    addr: Dict[str, int] = field(default_factory=dict)
    sources: List[str] = field(default_factory=list)

    def add(self, area: str, size: int, source: str, addr: Optional[int] = None) -> None:
        if area in self.needed or size <= 0:
            return
        self.needed[area] = size
        if addr is not None:
            self.addr[area] = addr
        if source not in self.sources:
            self.sources.append(source)


def _areas(nodes: Sequence[int]) -> List[str]:
    return ["lowmem", "global"] + [f"node {n}" for n in nodes]


def _mode(i: ActivationInputs, log: Sequence[str]
          ) -> Tuple[str, Optional[int], Optional[Tuple[int, int, int]]]:
    # kho_parse_scratch_size(): "N%" or "lowmem,global,pernode" (memparse sizes).
    value = kernel_param(i.command_line, "kho_scratch")
    if value is not None:
        if value.endswith("%") and value[:-1].isdigit():
            return "scale", int(value[:-1]), None
        sizes = [_memparse(v) for v in value.split(",")]
        if len(sizes) == 3 and all(s is not None for s in sizes) and any(sizes):
            return "explicit", None, (sizes[0], sizes[1], sizes[2])  # type: ignore[return-value]
    for line in log:
        match = _SCALE.search(line)
        if match:
            return "scale", int(match.group(1)), None
        match = _EXPLICIT.search(line)
        if match:
            low, glob, node = (int(g) << 20 for g in match.groups())
            return "explicit", None, (low, glob, node)
    return "scale", DEFAULT_SCRATCH_SCALE, None


def _memparse(text: str) -> Optional[int]:
    match = re.fullmatch(r"(\d+)([KMGTPE]?)", text.strip(), re.IGNORECASE)
    if not match:
        return None
    shift = " KMGTPE".index(match.group(2).upper() or " ") * 10
    return int(match.group(1)) << shift


def _kern(regions: Iterable[Region], limit: int, nid: Optional[int],
          flag: str) -> int:
    # memblock_reserved_kern_size() / memblock_reserved_hugetlb_size(), mm/memblock.c:1903-1945.
    total = 0
    for r in sorted(regions, key=lambda r: r.base):
        if r.base > limit:
            break
        size = limit - r.base if r.end > limit else r.size
        if (nid is None or r.nid == nid) and flag in r.flags:
            total += size
    return total


def _from_memblock(i: ActivationInputs, scale: int, sizes: _Sizes) -> Tuple[int, int]:
    # scratch_size_update() and scratch_size_node() on memblock.reserved now.
    assert i.memblock is not None
    regions = i.memblock.reserved.regions
    low_raw = (_kern(regions, i.low_limit, None, "RSRV_KERN")
               - _kern(regions, i.low_limit, None, "RSRV_HUGETLB")) * scale // 100
    kern = _kern(regions, ALLOC_ANYWHERE, None, "RSRV_KERN")
    huge = _kern(regions, ALLOC_ANYWHERE, None, "RSRV_HUGETLB")
    source = "memblock.reserved after boot"
    sizes.add("lowmem", _round_up(low_raw, i.alignment), source)
    sizes.add("global", _round_up(max((kern - huge) * scale // 100 - low_raw, 0), i.alignment),
              source)
    for nid in i.memory_nodes:
        node = (_kern(regions, ALLOC_ANYWHERE, nid, "RSRV_KERN")
                - _kern(regions, ALLOC_ANYWHERE, nid, "RSRV_HUGETLB"))
        sizes.add(f"node {nid}", _round_up(node * scale // 100, i.alignment), source)
    return kern, huge


def _array_sizes(i: ActivationInputs, sizes: _Sizes, notes: List[str]) -> None:
    # The entries kho_reserve_scratch() wrote before it failed (or all of them).
    names = _areas(i.memory_nodes)
    for index, (addr, size) in enumerate(i.array or ()):
        if not size or index >= len(names):
            continue
        if i.alignment and (addr % i.alignment or size % i.alignment):
            notes.append(f"kho_scratch[{index}] ({addr:#x}, {size:#x}) is not aligned: the "
                         "freed array was reused, its entries are ignored.")
            return
        sizes.add(names[index], size, "kho_scratch[]", addr)


def _log_sizes(log: Sequence[str], sizes: _Sizes) -> None:
    # memblock=debug: kho_reserve_scratch() asks for the array, then lowmem, then global.
    order = iter(("lowmem", "global"))
    for line in log:
        match = _REQUEST.search(line)
        if not match:
            continue
        if match.group(1) == "memblock_phys_alloc_range":
            area = next(order, None)
            if area:
                sizes.add(area, int(match.group(2)), "the kernel log (memblock=debug)")


def _free(i: ActivationInputs) -> Tuple[Optional[RangeSet], Optional[Dict[int, RangeSet]]]:
    # Free memory now: memblock.memory minus memblock.reserved (per node), or
    # System RAM minus the CMA areas when memblock is not kept (an upper bound).
    if i.memblock is not None:
        free = i.memblock.memory.ranges() - i.memblock.reserved.ranges()
        nodes: Dict[int, RangeSet] = {}
        for r in i.memblock.memory.regions:
            if r.nid is not None:
                nodes[r.nid] = nodes.get(r.nid, RangeSet()) | RangeSet([r.range])
        return free, {nid: ram & free for nid, ram in nodes.items()}
    if i.ram is not None:
        return i.ram - RangeSet(r.range for r in i.cma), None
    return None, None


def _largest(ranges: Optional[RangeSet], below: Optional[int] = None) -> Optional[int]:
    if ranges is None:
        return None
    if below is not None:
        ranges = ranges & RangeSet([Range.from_bounds(0, below)])
    return max((r.size for r in ranges), default=0)


def _drivers(i: ActivationInputs, kern: Optional[int], huge: Optional[int]
             ) -> List[SizingDriver]:
    named = _reservations(i.cma, i.reserve_mem)
    out = []
    counted_named = 0
    for res in named:
        if not res.size:
            continue
        counted = True
        if i.memblock is not None:
            # Counted when the reservation under it is RSRV_KERN and not RSRV_HUGETLB.
            under = [r for r in i.memblock.reserved.regions
                     if any(r.range.overlaps(x) for x in res.ranges)]
            counted = bool(under) and all("RSRV_KERN" in r.flags
                                          and "RSRV_HUGETLB" not in r.flags for r in under)
        counted_named += res.size if counted else 0
        out.append(SizingDriver(res.name, res.size, counted, res.base, res.node))
    if huge:
        out.append(SizingDriver("RSRV_HUGETLB (hugetlb boot pages)", huge, False))
    if kern is not None:
        rest = kern - (huge or 0) - counted_named
        if rest > 0:
            out.append(SizingDriver("RSRV_KERN (rest)", rest, True))
    return sorted(out, key=lambda d: (not d.counted, -d.size))


def scratch_sizing(i: ActivationInputs, failed: Optional[str]) -> Optional[ScratchSizing]:
    """The scratch sizing of a cold boot, rebuilt from what the target still
    holds (pure).

    :param failed: the area ``kho_reserve_scratch()`` could not reserve
        (``"array"``, ``"lowmem"``, ``"global"``, ``"node N"``), if it failed.
    :return: ``None`` for a KHO boot (the areas were inherited, not sized).
    """
    if i.kho_boot:
        return None
    log = i.log or ()
    mode, scale, explicit = _mode(i, log)
    sizes, notes = _Sizes(), list(i.notes)
    if failed != "array":
        _array_sizes(i, sizes, notes)
    _log_sizes(log, sizes)
    if explicit is not None:
        low, glob, node = explicit
        for area in _areas(i.memory_nodes):
            size = low if area == "lowmem" else glob if area == "global" else node
            sizes.add(area, _round_up(size, i.alignment), "kho_scratch= on the command line")
    kern = huge = None
    if i.memblock is not None:
        kern = _kern(i.memblock.reserved.regions, ALLOC_ANYWHERE, None, "RSRV_KERN")
        huge = _kern(i.memblock.reserved.regions, ALLOC_ANYWHERE, None, "RSRV_HUGETLB")
        if failed is None:
            # The areas are RSRV_KERN reservations themselves (kho_init()'s
            # failure path frees their pages but leaves memblock.reserved alone).
            kern -= sum(size for _, size in i.array or ())
        if mode == "scale" and failed is not None:
            # An active kernel's own areas are RSRV_KERN reservations too: only
            # after a failure (the areas freed) does memblock.reserved show the inputs.
            _from_memblock(i, scale or DEFAULT_SCRATCH_SCALE, sizes)
    free, per_node = _free(i)
    order = ["array"] + _areas(i.memory_nodes)
    needs = [_need("array", SCRATCH_ENTRY_SIZE * (len(i.memory_nodes) + 2), order, failed, None,
                   None)]
    for area in order[1:]:
        available = None
        if failed is not None:
            if area == "lowmem":
                available = _largest(free, i.low_limit + 1)
            elif area == "global":
                available = _largest(free)
            elif per_node is not None:
                nid = int(area.split()[1])
                available = _largest(per_node.get(nid))
        needs.append(_need(area, sizes.needed.get(area), order, failed, available,
                           sizes.addr.get(area)))
    sources = list(sizes.sources)
    if i.cma:
        sources.append("cma_areas[]")
    if failed is not None and free is not None:
        sources.append("free memory from memblock" if i.memblock is not None
                       else "free memory from System RAM minus CMA (an upper bound)")
    if i.memblock is None and i.memblock_note:
        notes.append("memblock is not kept after boot (or not readable): the kernel's "
                     "RSRV_KERN reservations cannot be summed")
    memory = (i.memblock.memory.ranges().total if i.memblock is not None
              else i.ram.total if i.ram is not None else None)
    return ScratchSizing(
        mode=mode, scale=scale, explicit=explicit, kern_reserved=kern, hugetlb_reserved=huge,
        memory=memory, needs=tuple(needs), drivers=tuple(_drivers(i, kern, huge)),
        source="; ".join(sources + notes) or "nothing the target still holds",
    )


def _need(area: str, needed: Optional[int], order: Sequence[str], failed: Optional[str],
          available: Optional[int], addr: Optional[int]) -> ScratchNeed:
    # kho_reserve_scratch() goes array, lowmem, global, then node by node, and
    # stops at the first failure: the areas before it were reserved (then
    # freed), the ones after it never tried.
    reserved: Optional[bool] = True
    if failed is not None and failed in order:
        mine, bad = order.index(area), order.index(failed)
        reserved = True if mine < bad else False if mine == bad else None
    return ScratchNeed(area, needed, available, reserved, addr)

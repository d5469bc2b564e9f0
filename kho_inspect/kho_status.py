# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO status reader
-----------------

The ``kho_inspect.kho_status`` module collects what ``kho-inspect kho
status`` reports about a kernel: whether KHO is on and this was a KHO boot,
the kexec count and the previous release (``kho_in`` members, or the
incoming ``kexec-metadata`` blob on kernels before those members), the ABI of
both root FDTs, LUO, the scratch symbols and the memblock flags. Everything
that cannot be read becomes ``None`` and a note; the result is one
:class:`~kho_inspect.model.kho.KhoStatus`, built in one step.
"""

import contextlib
from typing import List, NamedTuple, Optional, Tuple

import drgn
from drgn import Object, Program

from kho_inspect.errors import KhoInspectError, NotKhoKernelError
from kho_inspect.fdt import KEXEC_METADATA_NAME, KexecMetadata, KhoRoot
from kho_inspect.kho import (
    KHO_ENABLE_SYMBOLS,
    KHO_IN_SYMBOLS,
    KHO_OUT_SYMBOLS,
    KHO_SOURCE,
    find_scratch_symbols,
    find_symbol,
    is_kho_boot,
    kho_enabled,
    kho_in,
    kho_out,
    luo_state,
    member,
)
from kho_inspect.kho_fdt import blob_report, decoded_root
from kho_inspect.memblock import memblock_flag_table
from kho_inspect.model.kho import DIRECTION_NAMES, KhoStatus
from kho_inspect.target import kernel_release

__all__ = ("kho_status",)


class _Side(NamedTuple):
    # What one root FDT (out or in) says: its ABI and its kexec-metadata. (The
    # private records of the walkers are named tuples: a dataclass costs ~1 ms
    # to create at import, bench/bench_check.py.)
    compatible: Optional[str] = None
    mem_map: Optional[int] = None
    metadata: Optional[KexecMetadata] = None
    has_metadata: bool = False
    notes: Tuple[str, ...] = ()


def _side(prog: Program, direction: str) -> _Side:
    # An undecodable root FDT gives an empty side with a note.
    name = DIRECTION_NAMES[direction]
    try:
        root: KhoRoot = decoded_root(prog, direction)[3]
    except KhoInspectError as e:
        return _Side(notes=(f"Cannot decode the {name} root FDT: {e}",))
    sub = root.subtree(KEXEC_METADATA_NAME)
    if sub is None:
        return _Side(root.compatible, root.mem_map_phys)
    blob = blob_report(prog, sub, direction)
    if blob.kind != "kexec-metadata":
        return _Side(root.compatible, root.mem_map_phys, has_metadata=True, notes=(
            f"Cannot decode the {name} kexec-metadata: {blob.problem}",))
    return _Side(root.compatible, root.mem_map_phys, blob.decoded.value,  # type: ignore
                 has_metadata=True)


class _Incoming(NamedTuple):
    # kho_in's members and the incoming root FDT, reconciled.
    kexec_count: Optional[int] = None
    previous_release: Optional[str] = None
    fdt_phys: Optional[int] = None
    scratch_phys: Optional[int] = None
    side: Optional[_Side] = None
    notes: Tuple[str, ...] = ()


def _value(obj: Optional[Object]) -> Optional[int]:
    return None if obj is None else obj.value_()


def _incoming(prog: Program, boot: bool) -> _Incoming:
    kin = kho_in(prog)
    # kexec_count and previous_release arrived with the kexec-metadata blob,
    # Linux kernel commit 76aa46b9e404 ("kho: kexec-metadata: track previous
    # kernel chain") (in v7.1); older kernels lack them and only the blob can tell.
    count_obj, release_obj = member(kin, "kexec_count"), member(kin, "previous_release")
    count = _value(count_obj)
    release = (None if release_obj is None
               else release_obj.string_().decode(errors="replace") or None)
    scratch_phys = _value(member(kin, "scratch_phys"))
    if not boot:
        return _Incoming(0 if count is None else count, release, None, scratch_phys)
    side = _side(prog, "in")
    notes: List[str] = list(side.notes)
    if side.compatible is not None and not side.has_metadata:
        notes.append("The previous kernel handed over no kexec-metadata blob.")
    meta = side.metadata
    if meta is not None:
        if count_obj is None or release_obj is None:
            count, release = meta.kexec_count, meta.previous_release
        elif (meta.kexec_count, meta.previous_release) != (count, release):
            notes.append(
                f"The incoming kexec-metadata says count {meta.kexec_count} from "
                f"{meta.previous_release!r}, but kho_in holds {count} from {release!r}: the "
                "kernel refused or never read the blob.")
    notes.append("On a KHO boot, 7.3 creates no debugfs kho/out/fdt (kho_init() returns "
                 "early); `kho-inspect kho fdt --out` reads kho_out.fdt instead.")
    return _Incoming(count, release, _value(member(kin, "fdt_phys")), scratch_phys, side,
                     tuple(notes))


def _scratch(prog: Program) -> Tuple[Optional[str], Optional[int]]:
    # ("kho_scratch[:kho_scratch_cnt]", count) or (None, None).
    try:
        array, count = find_scratch_symbols(prog)
    except NotKhoKernelError:
        return None, None
    areas = None
    with contextlib.suppress(drgn.FaultError):
        areas = prog[count].value_()
    return f"{array}[:{count}]", areas


def kho_status(prog: Program) -> KhoStatus:
    """Collect the KHO status of a kernel; only a kernel without KHO is an error.

    Everything else that cannot be read becomes ``None`` and a note.

    :raises NotKhoKernelError: the kernel has no ``kho_out``.
    """
    fdt_out = kho_out(prog).fdt.value_() or None
    luo_sym, luo_on, luo_num = luo_state(prog)
    boot = is_kho_boot(prog)
    scratch_sym, scratch_areas = _scratch(prog)
    flags = memblock_flag_table(prog)
    enabled = kho_enabled(prog)
    if enabled is False and not boot:
        # KHO off: the array is a failed attempt's, not scratch (kho_inspect.diagnosis).
        scratch_areas = None
    incoming = _incoming(prog, boot)
    out = _side(prog, "out") if fdt_out is not None else _Side()
    in_side = incoming.side or _Side()
    notes = list(incoming.notes) + list(out.notes)
    if luo_on is None:
        notes.append("This kernel has no LUO (CONFIG_LIVEUPDATE=n).")
    if not flags.values:
        notes.append("The debug info has no enum memblock_flags.")
    return KhoStatus(
        release=kernel_release(prog),
        enabled=enabled,
        kho_boot=boot,
        kexec_count=incoming.kexec_count,
        previous_release=incoming.previous_release,
        next_kexec_count=None if out.metadata is None else out.metadata.kexec_count,
        compatible=out.compatible,
        compatible_in=in_side.compatible,
        luo=luo_on,
        liveupdate_num=luo_num,
        memblock_flags=flags,
        fdt_out=fdt_out,
        fdt_in_phys=incoming.fdt_phys,
        scratch_in_phys=incoming.scratch_phys,
        mem_map_out=out.mem_map,
        mem_map_in=in_side.mem_map,
        scratch_areas=scratch_areas,
        symbols={
            "kho_out": find_symbol(prog, KHO_OUT_SYMBOLS, KHO_SOURCE),
            "kho_in": find_symbol(prog, KHO_IN_SYMBOLS, KHO_SOURCE),
            "kho_enable": find_symbol(prog, KHO_ENABLE_SYMBOLS, KHO_SOURCE),
            "luo": luo_sym,
            "scratch": scratch_sym,
        },
        notes=tuple(notes),
    )

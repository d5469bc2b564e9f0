# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Chain rules
-----------

The ``kho_inspect.checks.chain`` module judges the metadata that links the
kernels of a kexec chain (docs/kernel/kho.md#subtrees):
``handover-abi`` checks what a kernel received against what it speaks and
holds, without the previous kernel; ``chain-metadata`` checks it against the
snapshot the previous kernel saved (count plus one, its release, the radix
root it handed over).
"""

from typing import List, Optional

from kho_inspect.checks.context import Context
from kho_inspect.checks.registry import Outcome, rule
from kho_inspect.model.check import Evidence
from kho_inspect.model.kho import KhoStatus
from kho_inspect.model.snapshot import FdtSummary

__all__ = ()

_KHO = "kernel/liveupdate/kexec_handover.c"


def _hex(value: Optional[int]) -> Optional[str]:
    return None if value is None else f"{value:#x}"


@rule(
    "handover-abi",
    "The incoming root FDT has this kernel's KHO ABI (compatible), kho_in holds the "
    "incoming kexec-metadata, and the outgoing kexec-metadata hands on count + 1 and this "
    "release.",
    f"{_KHO}:1977-1982 (kho_populate() refuses a root FDT of another compatible), :1729-1773 "
    "(kho_in_kexec_metadata() copies the incoming blob into kho_in), :1780-1801 "
    "(kho_out_kexec_metadata(): kho_in.kexec_count + 1 and init_uts_ns's release)",
    needs=("fdt_in", "fdt_out"),
    applies="KHO boots",
)
def handover_abi(ctx: Context) -> Outcome:
    ctx.kho_boot()
    fin = ctx.section("fdt_in")
    status = ctx.section("status")
    assert isinstance(fin, FdtSummary) and isinstance(status, KhoStatus)
    fout = ctx.cur.fdt_out
    evidence: List[Evidence] = []
    if fout is not None and fout.compatible and fin.compatible != fout.compatible:
        evidence.append(ctx.evidence(
            f"the incoming root FDT is {fin.compatible!r}, this kernel speaks "
            f"{fout.compatible!r}", owner="incoming root FDT", expected=fout.compatible,
            found=fin.compatible))
    meta = fin.kexec_metadata
    if meta is not None and meta.kexec_count is not None:
        held = (status.kexec_count, status.previous_release)
        if held != (meta.kexec_count, meta.previous_release):
            evidence.append(ctx.evidence(
                f"kho_in holds count {held[0]} from {held[1]!r}, the incoming kexec-metadata "
                f"says count {meta.kexec_count} from {meta.previous_release!r}",
                owner="kho_in", expected=(meta.kexec_count, meta.previous_release),
                found=held))
    evidence += _outgoing_metadata(ctx, status, fout)
    checked = "the incoming root FDT, kho_in and the outgoing kexec-metadata"
    if meta is None:
        checked += " (the previous kernel handed over no kexec-metadata)"
    return Outcome.of(evidence, checked)


def _outgoing_metadata(ctx: Context, status: KhoStatus, fout: Optional[FdtSummary]
                       ) -> List[Evidence]:
    meta = fout.kexec_metadata if fout is not None else None
    if meta is None or meta.kexec_count is None or status.kexec_count is None:
        return []
    out = []
    if meta.kexec_count != status.kexec_count + 1:
        out.append(ctx.evidence(
            f"the outgoing kexec-metadata hands on count {meta.kexec_count}, not this "
            f"kernel's {status.kexec_count} + 1", owner="outgoing kexec-metadata",
            expected=status.kexec_count + 1, found=meta.kexec_count))
    if ctx.cur.release and meta.previous_release != ctx.cur.release:
        out.append(ctx.evidence(
            f"the outgoing kexec-metadata names {meta.previous_release!r}, not this kernel's "
            f"release {ctx.cur.release!r}", owner="outgoing kexec-metadata",
            expected=ctx.cur.release, found=meta.previous_release))
    return out


@rule(
    "chain-metadata",
    "Along the chain, this kernel's kexec count is the previous kernel's plus one, its "
    "previous_release is that kernel's release, and the root FDT and radix root it received "
    "are the ones that kernel handed over.",
    f"{_KHO}:1780-1801 (kho_out_kexec_metadata()), :1729-1773 (kho_in_kexec_metadata()), "
    ":2043-2071 (kho_fill_kimage(): image->kho.fdt is kho_out.fdt), :1705-1727 "
    "(kho_out_fdt_setup(): preserved-memory-map is the outgoing radix root)",
    needs=("previous", "fdt_in"),
    applies="KHO boots",
)
def chain_metadata(ctx: Context) -> Outcome:
    ctx.kho_boot()
    prev = ctx.previous()
    status = ctx.section("status")
    assert isinstance(status, KhoStatus)
    evidence = _count_and_release(ctx, status)
    fin, fout = ctx.cur.fdt_in, prev.fdt_out
    if fin is not None and fout is not None:
        if fout.compatible and fin.compatible != fout.compatible:
            evidence.append(ctx.evidence(
                f"received a {fin.compatible!r} root FDT; {prev.release} handed over "
                f"{fout.compatible!r}", owner="incoming root FDT", expected=fout.compatible,
                found=fin.compatible))
        root = fout.mem_map_phys
        if root is None and prev.preserved_out is not None:
            root = prev.preserved_out.root
        if root is not None and fin.mem_map_phys != root:
            evidence.append(ctx.evidence(
                f"the incoming preserved-memory-map is {_hex(fin.mem_map_phys)}, the radix "
                f"root {prev.release} handed over was {_hex(root)}: the previous snapshot is "
                "not from the kernel that kexec'd into this one", owner="incoming root FDT",
                expected=_hex(root), found=_hex(fin.mem_map_phys)))
    return Outcome.of(evidence, f"against the snapshot of {prev.release}")


def _count_and_release(ctx: Context, status: KhoStatus) -> List[Evidence]:
    prev = ctx.previous()
    out = []
    handed = prev.fdt_out.kexec_metadata if prev.fdt_out is not None else None
    expected = handed.kexec_count if handed is not None else None
    if expected is None and prev.status is not None and prev.status.kexec_count is not None:
        expected = prev.status.kexec_count + 1
    if expected is not None and status.kexec_count != expected:
        out.append(ctx.evidence(
            f"this kernel's kexec count is {status.kexec_count}; {prev.release} handed on "
            f"{expected}", owner="kho_in.kexec_count", expected=expected,
            found=status.kexec_count))
    if prev.release and status.previous_release != prev.release:
        out.append(ctx.evidence(
            f"this kernel says it was kexec'd from {status.previous_release!r}, the previous "
            f"snapshot is of {prev.release!r}", owner="kho_in.previous_release",
            expected=prev.release, found=status.previous_release))
    return out

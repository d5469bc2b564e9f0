# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Activation rules
----------------

The ``kho_inspect.checks.activation`` module judges whether KHO is working
at all: ``kho-active`` fails when KHO was requested and turned itself off,
with the kernel's own log lines and the scratch sizing inputs as evidence
(docs/kernel/kho.md#scratch-sizing); ``handover-received`` fails when a
kernel kexec'd from a KHO-active kernel was not booted through KHO.
"""

from typing import List

from kho_inspect.checks.context import NOT_BUILT, Context, mib
from kho_inspect.checks.registry import Outcome, Skip, rule
from kho_inspect.model.check import Evidence
from kho_inspect.model.diagnosis import DEFAULT_SCRATCH_SCALE, KhoActivation, ScratchSizing
from kho_inspect.ranges import Range

__all__ = ()

_KHO = "kernel/liveupdate/kexec_handover.c"

KDUMP_LINE = "KHO: disabled in the kdump kernel"
"""``kho_memory_init()`` logs this when it turns KHO off in a kdump kernel."""


@rule(
    "kho-active",
    "KHO is active on a kernel that asked for it (kho=on, or "
    "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT without kho=off).",
    f"{_KHO}:832-907 (kho_reserve_scratch() turns KHO off when it cannot reserve a scratch "
    "area), :1819-1897 (kho_init() turns it off when its setup fails), :1941-1946 "
    "(kho_memory_init(): off in a kdump kernel)",
    needs=("activation",),
)
def kho_active(ctx: Context) -> Outcome:
    act = ctx.section("activation")
    assert isinstance(act, KhoActivation)
    if act.state == "not built":
        raise Skip(NOT_BUILT)
    if act.state == "not requested":
        raise Skip(f"KHO was not requested on this kernel: {act.reason}")
    if act.active:
        return Outcome.of((), f"KHO is active ({act.requested_by or 'requested'})")
    if any(KDUMP_LINE in line for line in act.log):
        raise Skip("KHO is off by design in a kdump kernel (kho_memory_init())")
    return Outcome.of(_disabled_evidence(ctx, act), act.reason)


def _disabled_evidence(ctx: Context, act: KhoActivation) -> List[Evidence]:
    asked = act.requested_by or "requested"
    luo = " LUO is off with it." if act.luo is False else ""
    evidence = [ctx.evidence(f"KHO was requested ({asked}) but the kernel disabled it: "
                             f"{act.reason}{luo}", owner=act.requested_by,
                             expected="active", found=act.state, lines=act.log)]
    if act.sizing is not None:
        evidence += _sizing_evidence(ctx, act.sizing)
    return evidence


def _sizing_evidence(ctx: Context, sizing: ScratchSizing) -> List[Evidence]:
    out = []
    for need in sizing.failed:
        offered = "unknown" if need.available is None else mib(need.available)
        asked = "an unknown size" if need.needed is None else mib(need.needed)
        rng = Range(need.addr, need.needed) if need.addr is not None and need.needed else None
        out.append(ctx.evidence(f"the {need.area} scratch area needed {asked} and could not be "
                                f"reserved (memory offered {offered})", rng,
                                owner=f"scratch {need.area}", expected=need.needed,
                                found=need.available))
    total = sizing.needed
    if total is not None and sizing.memory:
        out.append(ctx.evidence(
            f"the scratch areas needed {mib(total)} together, {100 * total // sizing.memory}% "
            f"of the {mib(sizing.memory)} of RAM ({_mode(sizing)}; {sizing.source})",
            expected=total, found=sizing.memory))
    scale = sizing.scale if sizing.scale is not None else DEFAULT_SCRATCH_SCALE
    for d in sizing.drivers:
        if not d.counted:
            continue
        grew = "" if sizing.mode != "scale" else f", adding {mib(d.size * scale // 100)}"
        rng = Range(d.base, d.size) if d.base is not None else None
        node = "" if d.node is None else f" on node {d.node}"
        out.append(ctx.evidence(f"{d.name} ({mib(d.size)}{node}) counted as kernel memory in "
                                f"the scratch sizing{grew}", rng, owner=d.name))
    return out


def _mode(sizing: ScratchSizing) -> str:
    if sizing.mode == "explicit" and sizing.explicit:
        low, glob, node = sizing.explicit
        return f"kho_scratch={mib(low)},{mib(glob)},{mib(node)}"
    scale = sizing.scale if sizing.scale is not None else DEFAULT_SCRATCH_SCALE
    return f"{scale}% of the kernel's memblock reservations"


@rule(
    "handover-received",
    "A kernel kexec'd from a kernel with KHO active was booted through KHO and accepted the "
    "handover (is_kho_boot(): kho_in.fdt_phys is set).",
    f"{_KHO}:2043-2071 (kho_fill_kimage() attaches the root FDT and the scratch array to a "
    "kexec_file_load() image), :1955-2039 (kho_populate() accepts them, else logs "
    "'disabling KHO revival'); arch/x86/kernel/setup.c:457-478 (add_kho())",
    needs=("previous",),
    applies="kernels kexec'd from a kernel with KHO active",
)
def handover_received(ctx: Context) -> Outcome:
    prev = ctx.previous()
    if not _had_kho(ctx):
        state = prev.activation.state if prev.activation is not None else "unknown"
        raise Skip(f"the previous kernel ({prev.release}) had no active KHO ({state}): it "
                   "handed nothing over")
    if ctx.cur.kho_boot is None:
        raise Skip(f"whether this kernel was booted through KHO is unknown: "
                   f"{ctx.cur.why_missing('status')}")
    if ctx.cur.kho_boot:
        return Outcome.of((), f"booted through KHO from {prev.release}")
    lines = ctx.cur.activation.log if ctx.cur.activation is not None else ()
    return Outcome.of([ctx.evidence(
        f"this kernel was not booted through KHO although {prev.release} had KHO active: the "
        "kexec did not use kexec_file_load() (kexec -s), or kho_populate() refused the "
        "handover", expected=True, found=False, lines=lines)],
        f"{prev.release} had KHO active")


def _had_kho(ctx: Context) -> bool:
    prev = ctx.previous()
    if prev.activation is not None:
        return prev.activation.active
    return prev.fdt_out is not None

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO symbols
-----------

The ``kho_inspect.kho`` module finds the Kexec HandOver globals of a kernel
(kernel/liveupdate/kexec_handover.c, Linux 7.3; see docs/kernel/kho.md):

* ``static struct kho_out kho_out``: ``void *fdt`` is the outgoing root FDT
  that the next kernel receives, ``radix_tree`` the preserved memory;
* ``static struct kho_in kho_in``: ``phys_addr_t fdt_phys`` is the incoming
  root FDT (nonzero exactly on a KHO boot, see :func:`is_kho_boot`), and
  since Linux kernel commit 76aa46b9e404 ("kho: kexec-metadata: track
  previous kernel chain") (in v7.1) ``previous_release`` and ``kexec_count``;
* ``static bool kho_enable`` (``kho=``), and LUO's ``luo_global.enabled``
  (kernel/liveupdate/luo_core.c, ``liveupdate=``);
* the scratch array ``kho_scratch[:kho_scratch_cnt]`` (:func:`find_scratch_symbols`).

Symbols are looked up by lists of known names (static variables first in
their source file, then globally), never assumed. The readers built on them
are :mod:`kho_inspect.kho_status`, :mod:`kho_inspect.kho_fdt`,
:mod:`kho_inspect.scratch` and :mod:`kho_inspect.preserved`.
"""

from typing import Optional, Sequence, Tuple

import drgn
from drgn import Object, Program

from kho_inspect.errors import NotKhoKernelError
from kho_inspect.target import find_variable

__all__ = (
    "KHO_SOURCE",
    "LUO_SOURCE",
    "KHO_OUT_SYMBOLS",
    "KHO_IN_SYMBOLS",
    "KHO_ENABLE_SYMBOLS",
    "LUO_SYMBOLS",
    "SCRATCH_SYMBOLS",
    "find_symbol",
    "find_scratch_symbols",
    "is_kho_boot",
    "kho_enabled",
    "kho_in",
    "kho_out",
    "luo_state",
    "member",
    "page_size",
)

KHO_SOURCE = "kexec_handover.c"
LUO_SOURCE = "luo_core.c"

KHO_OUT_SYMBOLS: Tuple[str, ...] = ("kho_out",)
"""Known names of ``static struct kho_out`` (kexec_handover.c)."""

KHO_IN_SYMBOLS: Tuple[str, ...] = ("kho_in",)
"""Known names of ``static struct kho_in`` (kexec_handover.c)."""

KHO_ENABLE_SYMBOLS: Tuple[str, ...] = ("kho_enable",)
"""Known names of ``static bool kho_enable`` (kexec_handover.c)."""

LUO_SYMBOLS: Tuple[Tuple[str, str], ...] = (("luo_global", "enabled"),)
"""Known ``(variable, member)`` spellings of LUO's on/off switch (luo_core.c)."""

SCRATCH_SYMBOLS: Tuple[Tuple[str, str], ...] = (
    ("kho_scratch", "kho_scratch_cnt"),
    # Linux kernel commit 85d3615cea17 ("kho: rename KHO scratch to KHO
    # bootmem"), queued in the liveupdate tree for 7.4, not in a release yet
    # (docs/kernel/history.md#scratch-rename).
    ("kho_bootmem", "kho_bootmem_cnt"),
)
"""Known spellings of the scratch array and its count, newest last."""

_NO_KHO = "This kernel has no KHO support (CONFIG_KEXEC_HANDOVER=n)"


def kho_out(prog: Program) -> Object:
    """The kernel's ``struct kho_out``.

    :raises NotKhoKernelError: no such variable (``CONFIG_KEXEC_HANDOVER=n``).
    """
    try:
        return find_variable(prog, KHO_OUT_SYMBOLS, KHO_SOURCE)[1]
    except LookupError as e:
        raise NotKhoKernelError(
            _NO_KHO, f"its debug info has no {' or '.join(KHO_OUT_SYMBOLS)} variable",
            name=KHO_OUT_SYMBOLS[0],
        ) from e


def kho_in(prog: Program) -> Optional[Object]:
    """The kernel's ``struct kho_in``, or ``None`` if it has none."""
    try:
        return find_variable(prog, KHO_IN_SYMBOLS, KHO_SOURCE)[1]
    except LookupError:
        return None


def kho_enabled(prog: Program) -> Optional[bool]:
    """``kho_enable`` (``kho=`` / ``CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT``).

    ``kho_init()`` clears it when it fails, so it is the kernel's own answer
    to ``kho_is_enabled()``. ``None`` if the variable cannot be found.
    """
    try:
        return bool(find_variable(prog, KHO_ENABLE_SYMBOLS, KHO_SOURCE)[1].value_())
    except LookupError:
        return None


def member(obj: Optional[Object], name: str) -> Optional[Object]:
    """``obj.name``, or ``None`` when ``obj`` is ``None`` or has no such member
    (a member that older kernels lack)."""
    if obj is None:
        return None
    try:
        return obj.member_(name)
    except LookupError:
        return None


def is_kho_boot(prog: Program) -> bool:
    """``is_kho_boot()``: whether ``kho_in.fdt_phys`` is nonzero."""
    fdt_phys = member(kho_in(prog), "fdt_phys")
    return bool(fdt_phys is not None and fdt_phys.value_())


def luo_state(prog: Program) -> Tuple[Optional[str], Optional[bool], Optional[int]]:
    """LUO's switch: ``(symbol found, enabled, liveupdate_num)``.

    ``enabled`` is ``None`` when the kernel has no LUO (``CONFIG_LIVEUPDATE=n``);
    ``liveupdate_num`` is the incoming live-update number (0 on a first boot).
    """
    for var, name in LUO_SYMBOLS:
        try:
            obj = find_variable(prog, (var,), LUO_SOURCE)[1]
            enabled = bool(obj.member_(name).value_())
        except LookupError:
            continue
        num = member(obj, "liveupdate_num")
        return f"{var}.{name}", enabled, None if num is None else num.value_()
    return None, None, None


def find_symbol(prog: Program, names: Sequence[str], filename: Optional[str]) -> Optional[str]:
    """The first of ``names`` that ``prog`` has as a variable (preferring
    ``filename``'s statics), or ``None``."""
    try:
        return find_variable(prog, names, filename)[0]
    except LookupError:
        return None


def find_scratch_symbols(prog: Program) -> Tuple[str, str]:
    """The names under which this kernel has the scratch array and its count.

    :raises NotKhoKernelError: none of :data:`SCRATCH_SYMBOLS` exists.
    """
    for array, count in SCRATCH_SYMBOLS:
        try:
            prog[array]
            prog[count]
        except LookupError:
            continue
        return array, count
    tried = ", ".join(f"{a}/{c}" for a, c in SCRATCH_SYMBOLS)
    raise NotKhoKernelError(
        f"The kernel has none of the scratch symbols {tried}",
        "it was built without CONFIG_KEXEC_HANDOVER, or the debug info does not belong to it",
    )


def page_size(prog: Program) -> int:
    """``PAGE_SIZE`` of the target (4096 if the program does not say)."""
    try:
        return prog["PAGE_SIZE"].value_()
    except (LookupError, drgn.FaultError):
        return 4096

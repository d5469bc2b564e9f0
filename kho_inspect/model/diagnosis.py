# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO activation
--------------

The ``kho_inspect.model.diagnosis`` module says whether Kexec HandOver is
working on a kernel and, when it is not, why: :class:`KhoActivation` tells
apart a kernel built without KHO, one where nobody asked for it, one where it
was asked for (``kho=on``, or ``CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT``) and
turned itself off, and one where it is active.

The commonest way KHO turns itself off is ``kho_reserve_scratch()`` failing
on a cold boot (kernel/liveupdate/kexec_handover.c, docs/kernel/kho.md): it
sizes the scratch areas from the kernel's own memblock reservations
(``RSRV_KERN`` minus ``RSRV_HUGETLB``, times the scale, 200% by default), and
a large ``hugetlb_cma=`` area counts as kernel memory. :class:`ScratchSizing`
holds those inputs: what each area needed, what memory held, and which
reservations drove the size.

Nothing here touches drgn; every class round-trips through JSON.
"""

from typing import Optional, Tuple

from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel

__all__ = (
    "ACTIVATION_STATES",
    "DEFAULT_SCRATCH_SCALE",
    "KhoActivation",
    "ScratchNeed",
    "ScratchSizing",
    "SizingDriver",
)

ACTIVATION_STATES = ("not built", "not requested", "disabled", "active")
"""``disabled``: requested, but the kernel turned KHO off itself."""

DEFAULT_SCRATCH_SCALE = 200
"""``scratch_scale`` when ``kho_scratch=`` is not given (kexec_handover.c)."""


@frozen
class ScratchNeed(JsonModel):
    """One scratch area (or the array itself) as ``kho_reserve_scratch()`` asked for it.

    :param area: ``"array"``, ``"lowmem"``, ``"global"`` or ``"node N"``.
    :param needed: bytes asked for, if known.
    :param available: what memory could offer for it (the largest free
        range, or the node's RAM), if known.
    :param reserved: ``True`` if the kernel got it, ``False`` if this is the
        area its ``Failed to reserve ...`` line names, ``None`` if unknown.
    :param addr: where it was placed, if it was.
    """

    area: str
    needed: Optional[int] = None
    available: Optional[int] = None
    reserved: Optional[bool] = None
    addr: Optional[int] = None


@frozen
class SizingDriver(JsonModel):
    """A reservation that entered the scratch sizing.

    :param name: ``"hugetlb_cma node 0"``, ``"log_buf"``, ``"RSRV_KERN (rest)"``.
    :param counted: whether ``scratch_size_update()`` counts it (reserved
        ``RSRV_KERN`` and not ``RSRV_HUGETLB``).
    """

    name: str
    size: int
    counted: bool
    base: Optional[int] = None
    node: Optional[int] = None


@frozen
class ScratchSizing(JsonModel):
    """The inputs of the scratch sizing of a cold boot.

    :param mode: ``"scale"`` (percent of kernel reservations),
        ``"explicit"`` (``kho_scratch=L,G,P``) or ``"unknown"``.
    :param scale: the percentage (``KHO: scratch scale is N%``, else 200).
    :param explicit: ``(lowmem, global, pernode)`` bytes from ``kho_scratch=``.
    :param kern_reserved: ``RSRV_KERN`` bytes counted, where known.
    :param hugetlb_reserved: ``RSRV_HUGETLB`` bytes subtracted, where known.
    :param memory: bytes of RAM (``memblock.memory`` or ``totalram``).
    :param source: where the numbers come from, in words.
    """

    mode: str
    scale: Optional[int] = None
    explicit: Optional[Tuple[int, int, int]] = None
    kern_reserved: Optional[int] = None
    hugetlb_reserved: Optional[int] = None
    memory: Optional[int] = None
    needs: Tuple[ScratchNeed, ...] = ()
    drivers: Tuple[SizingDriver, ...] = ()
    source: str = ""

    @property
    def needed(self) -> Optional[int]:
        """Bytes all areas needed together, if every one is known."""
        sizes = [n.needed for n in self.needs if n.area != "array"]
        if not sizes or any(s is None for s in sizes):
            return None
        return sum(s for s in sizes if s is not None)

    @property
    def failed(self) -> Tuple[ScratchNeed, ...]:
        return tuple(n for n in self.needs if n.reserved is False)


@frozen
class KhoActivation(JsonModel):
    """Whether KHO works on a kernel, and why not.

    :param state: one of :data:`ACTIVATION_STATES`.
    :param reason: one sentence.
    :param requested_by: what asked for KHO (``"kho=on on the command
        line"``, ``"CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT"``), if anything.
    :param log: the kernel's own lines that explain the state, verbatim
        without timestamps.
    :param sizing: the scratch sizing inputs, when scratch was sized.
    :param luo: whether LUO is on (``None``: the kernel has no LUO).
    """

    state: str
    reason: str
    requested_by: Optional[str] = None
    log: Tuple[str, ...] = ()
    sizing: Optional[ScratchSizing] = None
    luo: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.state not in ACTIVATION_STATES:
            raise ValueError(f"state must be one of {ACTIVATION_STATES}, not {self.state!r}")

    @property
    def active(self) -> bool:
        return self.state == "active"

    @property
    def requested(self) -> bool:
        return self.state in ("disabled", "active")

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Redaction
---------

The ``kho_inspect.redact`` module removes kernel virtual addresses from
outputs meant to be shared (``kho-inspect report``, ``kho-inspect diff``).
With KASLR the kernel's virtual addresses reveal where it was randomised to;
physical addresses do not, and they are what every KHO question is about, so
they stay.

A value is a kernel virtual address when it lies in the kernel half of the
target's address space: from ``0xff00000000000000`` on x86_64 (the lowest
kernel address with 5-level paging; ``0xffff800000000000`` with 4-level) and
from ``0xfff0000000000000`` on arm64 (the lowest with 52-bit virtual
addresses; 48-bit kernels start at ``0xffff000000000000``). No physical
address reaches those values (physical addresses have at most 52 bits).
``~0`` (``MEMBLOCK_ALLOC_ANYWHERE`` and other "no limit" values) is not an
address and stays.

A :class:`Redactor` replaces each distinct address by a label (``<kva-1>``,
``<kva-2>``, ... in the order met), so equal pointers stay recognisably
equal across one output while the KASLR offset is gone. It rewrites JSON
values (integers and strings) and free text (``0xffff888003a5e000``, also
without ``0x`` as ``%px`` prints it). Everything here is pure.
"""

import re
from typing import Any, Dict, Mapping, Optional

__all__ = ("KERNEL_VA_START", "Redactor", "is_kernel_address", "kernel_va_start")

KERNEL_VA_START: Mapping[str, int] = {
    "x86_64": 0xFF00_0000_0000_0000,
    "aarch64": 0xFFF0_0000_0000_0000,
}
"""The lowest kernel virtual address of each architecture (by ``uname -m``)."""

_DEFAULT_START = min(KERNEL_VA_START.values())
_ALL_ONES = (1 << 64) - 1
_ADDRESS = re.compile(r"(?<![0-9A-Za-z_])(0x)?([0-9a-fA-F]{16})(?![0-9A-Za-z_])")


def kernel_va_start(arch: Optional[str]) -> int:
    """The lowest kernel virtual address of ``arch`` (the lowest of all known
    architectures when ``arch`` is unknown).

    >>> hex(kernel_va_start("x86_64")), hex(kernel_va_start(None))
    ('0xff00000000000000', '0xff00000000000000')
    """
    return KERNEL_VA_START.get(arch or "", _DEFAULT_START)


def is_kernel_address(value: int, arch: Optional[str] = None) -> bool:
    """Whether ``value`` is a kernel virtual address of ``arch``.

    >>> is_kernel_address(0xffff888003a5e000), is_kernel_address(0x100000000)
    (True, False)
    >>> is_kernel_address((1 << 64) - 1)  # ~0: "anywhere", not an address
    False
    """
    return kernel_va_start(arch) <= value < _ALL_ONES


class Redactor:
    """Replaces kernel virtual addresses by stable labels.

    :param arch: the target's architecture (``Snapshot.arch``).
    :param enabled: ``False`` makes every method return its input (``--no-redact``).
    """

    def __init__(self, arch: Optional[str] = None, enabled: bool = True) -> None:
        self.arch = arch
        self.enabled = enabled
        self._labels: Dict[int, str] = {}

    @property
    def count(self) -> int:
        """How many distinct addresses were replaced so far."""
        return len(self._labels)

    def label(self, value: int) -> str:
        """The label of ``value`` (a new one for an address not seen yet)."""
        if value not in self._labels:
            self._labels[value] = f"<kva-{len(self._labels) + 1}>"
        return self._labels[value]

    def value(self, value: Any) -> Any:
        """``value`` with a kernel address replaced (integers and strings)."""
        if not self.enabled:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return self.label(value) if is_kernel_address(value, self.arch) else value
        if isinstance(value, str):
            return self.text(value)
        return value

    def text(self, text: str) -> str:
        """``text`` with every 16-digit hex kernel address replaced.

        >>> Redactor("x86_64").text("fdt at 0xffff888003a5e000, phys 0x3a5e000")
        'fdt at <kva-1>, phys 0x3a5e000'
        """
        if not self.enabled:
            return text

        def replace(match: "re.Match[str]") -> str:
            value = int(match.group(2), 16)
            return self.label(value) if is_kernel_address(value, self.arch) else match.group(0)

        return _ADDRESS.sub(replace, text)

    def json(self, obj: Any) -> Any:
        """A copy of the JSON value ``obj`` with every kernel address replaced."""
        if not self.enabled:
            return obj
        if isinstance(obj, Mapping):
            return {key: self.json(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.json(value) for value in obj]
        return self.value(obj)

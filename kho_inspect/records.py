# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Records
-------

The ``kho_inspect.records`` module decodes arrays of C structures that were
read with one ``prog.read()``. A :class:`RecordLayout` is built from the
target's type: member offsets, sizes, signedness and the byte order come from
debug info, so the same code decodes x86_64, a big-endian s390x or a kernel
with a 32-bit ``phys_addr_t``, and a member that moves is still found.

Decoding goes through :mod:`struct` (``iter_unpack``), so its cost is one
C-level loop per array, not one drgn object per member.
"""

import struct
from typing import Iterator, List, Sequence, Tuple

import drgn
from drgn import Type, TypeKind, offsetof, sizeof

__all__ = ("RecordLayout", "read_records")

_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_INTEGER_KINDS = (TypeKind.INT, TypeKind.BOOL, TypeKind.ENUM, TypeKind.POINTER)


def _signed(t: Type) -> bool:
    if t.kind == TypeKind.ENUM:
        return t.type is not None and t.type.is_signed
    return t.kind == TypeKind.INT and t.is_signed


def _code(t: Type, where: str) -> str:
    # The struct module code of one member: an integer of its size, or bytes
    # for a char array (the caller strips the NUL padding).
    t = t.unaliased()
    size = sizeof(t)
    if t.kind in _INTEGER_KINDS and size in _INT_CODES:
        code = _INT_CODES[size]
        return code if _signed(t) else code.upper()
    if t.kind == TypeKind.ARRAY and sizeof(t.type) == 1:
        return f"{size}s"
    raise TypeError(f"{where} is a {t}, which a RecordLayout cannot decode")


class RecordLayout:
    """How to decode the named members of one C structure.

    :param t: the structure type (``struct memblock_region``, ...).
    :param members: the members to decode, in the order the tuples return them.
    :param byteorder: ``"little"`` or ``"big"`` (:func:`kho_inspect.target.byteorder`).
    """

    def __init__(self, t: Type, members: Sequence[str], byteorder: str) -> None:
        self.type = t
        self.names: Tuple[str, ...] = tuple(members)
        self.size = sizeof(t)
        placed = sorted(
            (offsetof(t, name), _code(t.member(name).type, f"{t}.{name}"), index)
            for index, name in enumerate(self.names)
        )
        fmt, pos = "<" if byteorder == "little" else ">", 0
        for offset, code, index in placed:
            if offset < pos:
                raise TypeError(f"{t}.{self.names[index]} overlaps another decoded member")
            fmt += f"{offset - pos}x{code}" if offset > pos else code
            pos = offset + struct.calcsize("<" + code)
        if pos > self.size:
            raise TypeError(f"the members of {t} do not fit in its {self.size} bytes")
        self.struct = struct.Struct(fmt + (f"{self.size - pos}x" if self.size > pos else ""))
        # struct order (by offset) -> caller order (as named).
        self._order = [i for _, _, i in placed]
        self._inverse = sorted(range(len(placed)), key=self._order.__getitem__)

    def unpack(self, data: bytes, count: int) -> Iterator[Tuple]:
        """The members of the first ``count`` records in ``data``, as tuples."""
        inverse = self._inverse
        for values in self.struct.iter_unpack(data[:count * self.size]):
            yield tuple(values[i] for i in inverse)

    def __repr__(self) -> str:
        return f"RecordLayout({self.type}, {self.names}, {self.struct.format!r})"


def read_records(prog: drgn.Program, address: int, count: int,
                 layout: RecordLayout) -> List[Tuple]:
    """Read ``count`` records at ``address`` with one ``prog.read()``.

    :raises drgn.FaultError: the memory is not in the target.
    """
    if count <= 0:
        return []
    return list(layout.unpack(prog.read(address, count * layout.size), count))

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO FDT reader
--------------

The ``kho_inspect.kho_fdt`` module reads the KHO root FDTs of a kernel and
their sub-blobs (see docs/kernel/kho.md):

* outgoing: ``kho_out.fdt``, one page from ``kho_alloc_preserve()`` (a
  direct-map address) that the next kernel receives;
* incoming: the page at ``kho_in.fdt_phys`` (KHO boots only).

Each blob is read in bulk, one ``prog.read()`` per blob, and decoded by the
pure :mod:`kho_inspect.fdt`; the result is a
:class:`~kho_inspect.model.kho.KhoFdtReport`.
"""

from typing import Optional, Sequence, Tuple

import drgn
from drgn import Program

from kho_inspect.errors import CorruptTreeError, NotInKernelError, NotKhoKernelError
from kho_inspect.fdt import (
    FDT_HEADER_SIZE,
    MAX_BLOB_SIZE,
    KhoRoot,
    KhoSubtree,
    decode_blob,
    decode_kho_root,
    fdt_totalsize,
)
from kho_inspect.kho import is_kho_boot, kho_in, kho_out, member, page_size
from kho_inspect.model.kho import DIRECTION_NAMES, DIRECTIONS, BlobReport, KhoFdtReport
from kho_inspect.radix import ReadPage
from kho_inspect.target import byteorder

__all__ = (
    "blob_report",
    "decoded_root",
    "read_blob",
    "read_kho_fdt",
    "read_root_fdt",
)


def _read(prog: Program, addr: int, size: int, physical: bool, what: str) -> bytes:
    try:
        return prog.read(addr, size, physical)
    except drgn.FaultError as e:
        kind = "physical" if physical else "virtual"
        raise CorruptTreeError(
            f"{what} at {kind} address {addr:#x} cannot be read ({e.message})",
            "the pointer is corrupt, or the dump does not contain that memory",
        ) from e


def _read_fdt(prog: Program, addr: int, physical: bool, what: str) -> bytes:
    header = _read(prog, addr, FDT_HEADER_SIZE, physical, what)
    return _read(prog, addr, fdt_totalsize(header, what), physical, what)


def _out_fdt_address(prog: Program) -> int:
    fdt = kho_out(prog).fdt.value_()
    if not fdt:
        raise NotKhoKernelError(
            "kho_out.fdt is NULL",
            "KHO is not active on this kernel (not requested, or it disabled itself: see the "
            "kernel log)",
        )
    return fdt


def _in_fdt_phys(prog: Program) -> int:
    kho_out(prog)  # a kernel without KHO says so first
    if not is_kho_boot(prog):
        raise NotKhoKernelError(
            "This kernel was not booted through KHO (kho_in.fdt_phys is 0), so it has no "
            "incoming FDT",
            "use {alternatives} for the FDT it will hand over",
            given="direction", name="in", alternatives=("direction=out",),
        )
    return member(kho_in(prog), "fdt_phys").value_()  # type: ignore[union-attr]


def read_root_fdt(prog: Program, direction: str = "out") -> Tuple[int, bool, bytes]:
    """Read the outgoing (``kho_out.fdt``) or incoming (``kho_in.fdt_phys``) root FDT.

    :param direction: ``"out"`` or ``"in"``.
    :return: ``(address, physical, bytes)``; the outgoing address is virtual.
    :raises NotKhoKernelError: no KHO, KHO off (out), or a cold boot (in).
    :raises CorruptTreeError: the page is unreadable or not an FDT.
    """
    if direction == "out":
        addr, physical = _out_fdt_address(prog), False
    elif direction == "in":
        addr, physical = _in_fdt_phys(prog), True
    else:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    what = f"The {DIRECTION_NAMES[direction]} KHO root FDT"
    return addr, physical, _read_fdt(prog, addr, physical, what)


def decoded_root(prog: Program, direction: str) -> Tuple[int, bool, bytes, KhoRoot]:
    """:func:`read_root_fdt` and its decoded form.

    :raises CorruptTreeError: also when the root is not a ``kho-vN`` FDT.
    """
    addr, physical, data = read_root_fdt(prog, direction)
    return addr, physical, data, decode_kho_root(data, byteorder(prog))


def read_blob(prog: Program, sub: KhoSubtree) -> bytes:
    """The bytes of one sub-blob: ``preserved-data`` phys, ``blob-size`` bytes.

    Without ``blob-size`` (kho-v1/v2: before Linux kernel commit 85e41392820f
    ("kho: persist blob size in KHO FDT") (in v7.1) every blob was an FDT) the FDT
    header gives the size.

    :raises CorruptTreeError: no address, an absurd size, or unreadable memory.
    """
    what = f"KHO blob {sub.name}"
    if sub.phys is None:
        raise CorruptTreeError(f"{what} has no usable address: {'; '.join(sub.problems)}")
    if sub.size is None:
        return _read_fdt(prog, sub.phys, True, what)
    if sub.size > MAX_BLOB_SIZE:
        raise CorruptTreeError(
            f"{what} claims {sub.size} bytes, more than the {MAX_BLOB_SIZE} kho-inspect reads",
            "the FDT is corrupt",
        )
    return _read(prog, sub.phys, sub.size, True, what)


def _page_reader(prog: Program, size: int) -> ReadPage:
    return lambda phys: prog.read(phys, size, True)


# Why an incoming blob may show stale bytes (see docs/kernel/kho.md#incoming-tree).
_STALE_IN = {
    "luo": "LUO frees its incoming blob in luo_early_startup() (kho_restore_free), so these "
           "bytes may already be reused.",
    "kho-test": "test_kho restores its folio list at boot and frees the list and its chunk "
                "pages, so the list read here may be stale.",
}


def blob_report(prog: Program, sub: KhoSubtree, direction: str) -> BlobReport:
    """Read and decode one sub-blob; a read failure becomes the report's ``error``."""
    try:
        data = read_blob(prog, sub)
    except CorruptTreeError as e:
        return BlobReport(sub.name, sub.phys, sub.size, error=str(e))
    psize = page_size(prog)
    decoded = decode_blob(sub.name, data, _page_reader(prog, psize), page_size=psize,
                          byteorder=byteorder(prog))
    stale = _STALE_IN.get(decoded.kind) if direction == "in" else None
    return BlobReport(sub.name, sub.phys, sub.size, data, decoded,
                      notes=(stale,) if stale else ())


def read_kho_fdt(prog: Program, direction: str = "out",
                 names: Optional[Sequence[str]] = None) -> KhoFdtReport:
    """Read and decode a root FDT and its sub-blobs.

    :param direction: ``"out"`` or ``"in"``.
    :param names: only these sub-blobs (all if ``None``).
    :raises NotKhoKernelError: see :func:`read_root_fdt`.
    :raises CorruptTreeError: the root FDT is unreadable or not ``kho-vN``.
    :raises NotInKernelError: a name in ``names`` is not a subnode of the root
        (``name`` is it, ``available`` the subnodes there are).
    """
    addr, physical, data, root = decoded_root(prog, direction)
    subs = {s.name: s for s in root.subtrees}
    missing = [n for n in names or () if n not in subs]
    if missing:
        raise NotInKernelError(
            f"The {DIRECTION_NAMES[direction]} root FDT has no subnode {missing[0]!r}",
            given="names", name=missing[0], available=tuple(subs))
    wanted = [subs[n] for n in names] if names is not None else list(root.subtrees)
    blobs = {s.name: blob_report(prog, s, direction) for s in wanted}
    return KhoFdtReport(direction=direction, address=addr, physical=physical, data=data,
                        root=root, blobs=blobs, byteorder=byteorder(prog),
                        page_size=page_size(prog))

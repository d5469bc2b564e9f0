# SPDX-License-Identifier: LGPL-2.1-or-later
"""Tiny kdump-compressed files, laid out as makedumpfile and QEMU write them.

Written from makedumpfile's ``diskdump_mod.h`` (64-bit, little endian): a
``struct disk_dump_header`` block, a ``struct kdump_sub_header`` block
(header version 6) with the vmcoreinfo after it, the two page bitmaps, one
``page_desc_t`` per dumped page and the pages, stored uncompressed. drgn
opens the result when given the platform and the vmcoreinfo (what
:func:`kho_inspect.target.open_core` does for QEMU's kdump cores).
"""

import struct
from typing import Mapping

__all__ = ["kdump_file", "VMCOREINFO"]

BLOCK = 4096
VMCOREINFO = (b"OSRELEASE=7.3.4-kho-inspect-test\nPAGESIZE=4096\nKERNELOFFSET=0\n"
              b"SYMBOL(swapper_pg_dir)=ffffffff82e3c000\n")
_SUB_HEADER = struct.Struct("<QiiQQQQQQQQQQQ")
_PAGE_DESC = struct.Struct("<QIIQ")


def _header(bitmap_blocks: int, max_mapnr: int, status: int, machine: bytes) -> bytes:
    head = bytearray(BLOCK)
    head[:8] = b"KDUMP   "
    struct.pack_into("<i", head, 8, 6)  # header_version
    head[8 + 4 + 4 * 65:8 + 4 + 4 * 65 + len(machine)] = machine  # utsname.machine
    # status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr
    struct.pack_into("<iiiII", head, 424, status, BLOCK, 1, bitmap_blocks, max_mapnr)
    return bytes(head)


def kdump_file(pages: Mapping[int, bytes], max_mapnr: int = 64, *,
               vmcoreinfo: bytes = VMCOREINFO, status: int = 0,
               machine: bytes = b"x86_64") -> bytes:
    """A kdump-compressed dump of ``pages`` ({pfn: 4096 bytes}), pfns below ``max_mapnr``."""
    bitmap_half = -(-max_mapnr // 8 // BLOCK) * BLOCK or BLOCK
    bitmap = bytearray(bitmap_half)
    for pfn in pages:
        bitmap[pfn // 8] |= 1 << (pfn % 8)
    sub = _SUB_HEADER.pack(0, 31, 0, 0, 0, BLOCK + _SUB_HEADER.size, len(vmcoreinfo), 0, 0,
                           0, 0, 0, 0, max_mapnr)
    descriptors = (2 + 2 * bitmap_half // BLOCK) * BLOCK
    data_start = descriptors + _PAGE_DESC.size * len(pages)
    descs, data = b"", b""
    for pfn in sorted(pages):
        descs += _PAGE_DESC.pack(data_start + len(data), len(pages[pfn]), 0, 0)
        data += pages[pfn]
    return (_header(2 * bitmap_half // BLOCK, max_mapnr, status, machine)
            + (sub + vmcoreinfo).ljust(BLOCK, b"\0") + bytes(bitmap) * 2 + descs + data)

"""
kdump-compressed files
----------------------

Two things drgn's kdump reader (libkdumpfile) needs help with, both met with
QEMU's ``dump-guest-memory`` kdump cores:

* The architecture: libkdumpfile may fail with ``kdump_get_string_attr(
  KDUMP_ATTR_ARCH_NAME): Key has no value`` (libkdumpfile issue #36); drgn
  opens the file when the ``Program`` is created with the platform and the
  vmcoreinfo, which :func:`read_header` takes from the file's own headers
  (``struct disk_dump_header`` and ``struct kdump_sub_header`` of
  makedumpfile's diskdump_mod.h).
* The flattened format: QEMU before 8.2 writes ``dump-guest-memory`` kdump-compressed cores in
makedumpfile's *flattened* format (the one ``makedumpfile -F`` streams): a
4 KiB header whose signature is ``makedumpfile``, then records of a big-endian
``struct makedumpfile_data_header {int64_t offset; int64_t buf_size;}``
followed by ``buf_size`` bytes to be written at ``offset``, ended by a record
whose offset is -1. libkdumpfile (drgn's kdump reader) does not read it, so
the lab rewrites it into the ordinary kdump file, as ``makedumpfile -R`` does.
"""

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

from kho_inspect.errors import InputError

__all__ = ("SIGNATURE", "KdumpHeader", "read_header", "is_flattened", "unflatten",
           "unflatten_in_place")

KDUMP_SIGNATURE = b"KDUMP   "
# struct disk_dump_header: signature[8], int header_version, struct new_utsname
# (6 x char[65]: machine is the fifth), then after struct timeval and status the
# int block_size at offset 428 (x86_64 layout; the sub-header starts at block_size).
_UTS_MACHINE = slice(8 + 4 + 4 * 65, 8 + 4 + 5 * 65)
_BLOCK_SIZE_OFFSET = 428
# struct kdump_sub_header: phys_base, dump_level, split, start_pfn, end_pfn,
# offset_vmcoreinfo, size_vmcoreinfo.
_SUB_HEADER = struct.Struct("<QiiQQQQ")

SIGNATURE = b"makedumpfile"
HEADER_SIZE = 4096  # MAX_SIZE_MDF_HEADER
_FILE_HEADER = struct.Struct(">16sqq")  # signature, type, version
_DATA_HEADER = struct.Struct(">qq")  # offset, buf_size
TYPE_FLAT_HEADER = 1
END_FLAG = -1
CHUNK = 1 << 22


@dataclass(frozen=True)
class KdumpHeader:
    """What a kdump-compressed file says about itself."""

    machine: str
    vmcoreinfo: Optional[bytes]


def read_header(path: str) -> Optional[KdumpHeader]:
    """The machine and vmcoreinfo of a (non-flattened) kdump file; ``None`` if it is not one."""
    with open(path, "rb") as f:
        head = f.read(512)
        if len(head) < _BLOCK_SIZE_OFFSET + 4 or head[:8] != KDUMP_SIGNATURE:
            return None
        machine = head[_UTS_MACHINE].split(b"\0", 1)[0].decode(errors="replace")
        block_size = int.from_bytes(head[_BLOCK_SIZE_OFFSET:_BLOCK_SIZE_OFFSET + 4], "little")
        f.seek(block_size)
        sub = f.read(_SUB_HEADER.size)
        if len(sub) < _SUB_HEADER.size:
            return KdumpHeader(machine, None)
        offset, size = _SUB_HEADER.unpack(sub)[5:]
        if not offset or not size:
            return KdumpHeader(machine, None)
        f.seek(offset)
        return KdumpHeader(machine, f.read(size))


def is_flattened(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(_FILE_HEADER.size)
    if len(head) < _FILE_HEADER.size:
        return False
    signature, kind, _version = _FILE_HEADER.unpack(head)
    return signature.rstrip(b"\0") == SIGNATURE and kind == TYPE_FLAT_HEADER


def _copy(src: BinaryIO, dst: BinaryIO, size: int, path: Path) -> None:
    while size:
        data = src.read(min(size, CHUNK))
        if not data:
            raise InputError(f"{path} ends inside a data record: the dump is truncated.")
        dst.write(data)
        size -= len(data)


def unflatten(src_path: Path, dst_path: Path) -> None:
    """Write the kdump file that the flattened file ``src_path`` describes.

    :raises InputError: the file is not flattened or is truncated.
    """
    if not is_flattened(src_path):
        raise InputError(f"{src_path} is not a flattened kdump file.")
    with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
        src.seek(HEADER_SIZE)
        while True:
            head = src.read(_DATA_HEADER.size)
            if len(head) < _DATA_HEADER.size:
                raise InputError(f"{src_path} has no end record: the dump is truncated.")
            offset, size = _DATA_HEADER.unpack(head)
            if offset == END_FLAG:
                return
            if offset < 0 or size < 0:
                raise InputError(f"{src_path} has a bad data record ({offset}, {size}).")
            dst.seek(offset)
            _copy(src, dst, size, src_path)


def unflatten_in_place(path: Path) -> bool:
    """Rewrite ``path`` as an ordinary kdump file if it is flattened; True if it was."""
    if not is_flattened(path):
        return False
    tmp = path.with_name(path.name + ".unflattening")
    try:
        unflatten(path, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


def main(argv: Optional[list] = None) -> int:
    """``python3 -m kho_inspect.kdump FLATTENED OUTPUT``: what ``makedumpfile -R`` does."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 -m kho_inspect.kdump FLATTENED OUTPUT", file=sys.stderr)
        return 3
    try:
        unflatten(Path(args[0]), Path(args[1]))
    except (InputError, OSError) as e:
        print(f"kho_inspect.kdump: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

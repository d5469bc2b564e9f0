# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Dump files
----------

What the headers of a kernel dump (or of a file given in its place) say, read
without drgn, so that a bad file is refused with a reason drgn cannot give:

* :func:`file_kind` tells an ELF core, a kdump-compressed file and its
  flattened form apart from a vmlinux, a compressed file or a bzImage.
* :func:`described_size` is the size the headers describe: an ELF file ends
  after its last program header's data (``p_offset + p_filesz``), a
  kdump-compressed file after the data of its last page descriptor. A file
  shorter than that was cut while it was written or copied.
* :func:`elf_build_id` reads a vmlinux's GNU build ID from its notes.

Two things drgn's kdump reader (libkdumpfile) needs help with, both met with
QEMU's ``dump-guest-memory`` kdump cores:

* The architecture: libkdumpfile may fail with ``kdump_get_string_attr(
  KDUMP_ATTR_ARCH_NAME): Key has no value`` (libkdumpfile issue #36); drgn
  opens the file when the ``Program`` is created with the platform and the
  vmcoreinfo, which :func:`read_header` takes from the file's own headers.
* The flattened format: QEMU before 8.2 writes ``dump-guest-memory`` kdump-compressed cores in
  makedumpfile's *flattened* format (the one ``makedumpfile -F`` streams): a
  4 KiB header whose signature is ``makedumpfile``, then records of a big-endian
  ``struct makedumpfile_data_header {int64_t offset; int64_t buf_size;}``
  followed by ``buf_size`` bytes to be written at ``offset``, ended by a record
  whose offset is -1. libkdumpfile does not read it, so the lab rewrites it
  into the ordinary kdump file, as ``makedumpfile -R`` does.

The kdump-compressed layout (makedumpfile's ``diskdump_mod.h``): block 0 holds
``struct disk_dump_header``, the next ``sub_hdr_size`` blocks ``struct
kdump_sub_header`` (with the vmcoreinfo), then ``bitmap_blocks`` blocks of two
equal bitmaps (the second marks the pfns that have a page descriptor), then
one 24-byte ``page_desc_t {off_t offset; u32 size; u32 flags; u64
page_flags;}`` per dumped page, then the page data in pfn order (a page of
zeros, shared by all zero pages, comes first). Integers are in the dumped
machine's byte order.
"""

import os
import struct
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple

from kho_inspect.errors import InputError
from kho_inspect.frozen import frozen

__all__ = ("SIGNATURE", "KDUMP_SIGNATURE", "KINDS", "SNIFF_SIZE", "file_kind", "ElfHeader",
           "elf_header", "Described", "described_size", "elf_build_id", "KdumpHeader",
           "read_header", "is_flattened", "unflatten", "unflatten_in_place")

# --- what a file is ----------------------------------------------------------

SNIFF_SIZE = 1024  # enough for every signature below (bzImage's is at 0x202)
KDUMP_SIGNATURE = b"KDUMP   "
SIGNATURE = b"makedumpfile"
ELF_MAGIC = b"\x7fELF"
_ET_REL, _ET_EXEC, _ET_DYN, _ET_CORE = 1, 2, 3, 4

# kind -> what it is, in words.
KINDS: Dict[str, str] = {
    "empty": "empty",
    "elf-core": "an ELF core dump",
    "elf-executable": "an ELF executable (a vmlinux?)",
    "elf-shared": "an ELF shared object",
    "elf-object": "an ELF object file (a kernel module?)",
    "elf-other": "an ELF file of an unknown type",
    "kdump": "a kdump-compressed dump",
    "flattened": "a flattened kdump file",
    "bzimage": "a bootable kernel image (bzImage)",
    "gzip": "gzip-compressed",
    "xz": "xz-compressed",
    "zstd": "zstd-compressed",
    "bzip2": "bzip2-compressed",
    "lz4": "lz4-compressed",
    "unknown": "neither an ELF nor a kdump-compressed file",
}
_MAGICS: Tuple[Tuple[bytes, str], ...] = (
    (KDUMP_SIGNATURE, "kdump"), (b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"), (b"\x04\x22\x4d\x18", "lz4"),
)
_ELF_TYPES = {_ET_CORE: "elf-core", _ET_EXEC: "elf-executable", _ET_DYN: "elf-shared",
              _ET_REL: "elf-object"}


def file_kind(head: bytes) -> str:
    """Which of :data:`KINDS` a file is, from its first :data:`SNIFF_SIZE` bytes."""
    if not head:
        return "empty"
    header = elf_header(head)
    if header is not None:
        return _ELF_TYPES.get(header.type, "elf-other")
    if head[:len(SIGNATURE)] == SIGNATURE:
        return "flattened"
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    if head[0x202:0x206] == b"HdrS":  # struct setup_header.header of x86 boot images
        return "bzimage"
    return "unknown"


@frozen
class Described:
    """The size of a file as its headers describe it.

    ``exact`` is false when the headers themselves are cut, so ``size`` is only
    the end of what could be read of them (the file is at least that long).
    """

    size: int
    exact: bool = True


def described_size(f: BinaryIO) -> Optional[Described]:
    """The size the headers of the ELF or kdump-compressed file ``f`` describe.

    ``None`` if ``f`` is neither, or its headers do not tell (an incomplete
    makedumpfile dump says so itself).
    """
    f.seek(0)
    head = f.read(SNIFF_SIZE)
    header = elf_header(head)
    if header is not None:
        return _elf_described(f, header)
    if head.startswith(KDUMP_SIGNATURE):
        return _kdump_described(f, head)
    return None


# --- ELF ----------------------------------------------------------------------


@frozen
class ElfHeader:
    """The fields of ``Elf32_Ehdr``/``Elf64_Ehdr`` this module needs."""

    is_64: bool
    endian: str  # struct's "<" or ">"
    type: int
    phoff: int
    phentsize: int
    phnum: int
    shoff: int
    shentsize: int
    shnum: int


_PN_XNUM = 0xFFFF  # e_phnum when the count is in section 0's sh_info


def elf_header(head: bytes) -> Optional[ElfHeader]:
    """The ELF header at the start of ``head``; ``None`` if it is not one."""
    if head[:4] != ELF_MAGIC or len(head) < 52 or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    is_64, endian = head[4] == 2, "<" if head[5] == 1 else ">"
    if is_64 and len(head) < 64:
        return None
    fmt = endian + ("HHIQQQIHHHHHH" if is_64 else "HHIIIIIHHHHHH")
    (etype, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, _shstrndx) = struct.unpack_from(fmt, head, 16)
    return ElfHeader(is_64, endian, etype, phoff, phentsize, phnum, shoff, shentsize, shnum)


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _section0(f: BinaryIO, h: ElfHeader) -> Tuple[int, int]:
    """``(sh_size, sh_info)`` of section 0, where counts too big for the header live."""
    if not h.shoff:
        return 0, 0
    fmt = h.endian + ("IIQQQQII" if h.is_64 else "IIIIIIII")
    raw = _read_at(f, h.shoff, struct.calcsize(fmt))
    if len(raw) < struct.calcsize(fmt):
        return 0, 0
    fields = struct.unpack(fmt, raw)
    return fields[5], fields[7]


def _elf_described(f: BinaryIO, h: ElfHeader) -> Optional[Described]:
    size0, info0 = _section0(f, h)
    phnum = info0 if h.phnum == _PN_XNUM else h.phnum
    shnum = size0 if h.shnum == 0 and h.shoff else h.shnum
    table_end = h.phoff + phnum * h.phentsize
    ends = [table_end, h.shoff + shnum * h.shentsize if h.shoff else 0]
    # Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz; Elf32_Phdr: type, offset, vaddr,
    # paddr, filesz.
    fmt, at = (h.endian + "IIQQQQ", (2, 5)) if h.is_64 else (h.endian + "IIIII", (1, 4))
    if phnum and h.phentsize < struct.calcsize(fmt):
        return None
    table = _read_at(f, h.phoff, phnum * h.phentsize)
    if len(table) < phnum * h.phentsize:
        return Described(max(ends), exact=False)
    for i in range(phnum):
        fields = struct.unpack_from(fmt, table, i * h.phentsize)
        if fields[0] and fields[at[1]]:  # not PT_NULL, has file data
            ends.append(fields[at[0]] + fields[at[1]])
    return Described(max(ends))


def elf_build_id(path: str) -> Optional[bytes]:
    """The GNU build ID of an ELF file, or ``None``.

    Only the section headers and the notes are read, so this is cheap even on
    a 300 MB vmlinux.
    """
    try:
        with open(path, "rb") as f:
            h = elf_header(f.read(64))
            if h is None or not h.is_64:
                return None
            table = _read_at(f, h.shoff, h.shentsize * h.shnum)
            for i in range(h.shnum):
                sh_type, = struct.unpack_from(h.endian + "I", table, i * h.shentsize + 4)
                if sh_type != 7:  # SHT_NOTE
                    continue
                off, size = struct.unpack_from(h.endian + "QQ", table, i * h.shentsize + 0x18)
                found = _build_id_from_notes(_read_at(f, off, size), h.endian)
                if found:
                    return found
    except (OSError, struct.error):
        return None
    return None


def _build_id_from_notes(notes: bytes, endian: str) -> Optional[bytes]:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from(endian + "III", notes, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        if ntype == 3 and notes[name_start:name_start + namesz].rstrip(b"\0") == b"GNU":
            return notes[desc_start:desc_start + descsz]
        pos = desc_start + ((descsz + 3) & ~3)
    return None


# --- kdump-compressed -----------------------------------------------------------

# struct disk_dump_header (64-bit layout): signature[8], int header_version, struct
# new_utsname (6 x char[65]; machine is the fifth), struct timeval, then from offset 424:
# status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr.
_UTS_MACHINE = slice(8 + 4 + 4 * 65, 8 + 4 + 5 * 65)
_DISK_DUMP_TAIL = (424, "iiiII")
# struct kdump_sub_header: phys_base, dump_level, split, start_pfn, end_pfn,
# offset_vmcoreinfo, size_vmcoreinfo, offset_note, size_note, offset_eraseinfo,
# size_eraseinfo, start_pfn_64, end_pfn_64, max_mapnr_64 (later fields by header_version).
_SUB_HEADER = "QiiQQQQQQQQQQQ"
_PAGE_DESC = "QIIQ"  # page_desc_t: offset, size, flags, page_flags
_DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
_BITMAP_CHUNK = 1 << 20


@frozen
class _DiskDump:
    endian: str
    version: int
    machine: str
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int


def _disk_dump(head: bytes) -> Optional[_DiskDump]:
    offset, fmt = _DISK_DUMP_TAIL
    if head[:8] != KDUMP_SIGNATURE or len(head) < offset + struct.calcsize(fmt):
        return None
    # Written in the dumped machine's byte order: the one where the version is small.
    endian = "<" if 0 < int.from_bytes(head[8:12], "little") < 1024 else ">"
    version, = struct.unpack_from(endian + "i", head, 8)
    status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from(
        endian + fmt, head, offset)
    if block_size & (block_size - 1) or not 512 <= block_size <= 1 << 20:
        return None  # not the 64-bit layout
    machine = head[_UTS_MACHINE].split(b"\0", 1)[0].decode(errors="replace")
    return _DiskDump(endian, version, machine, status, block_size, sub_hdr_size,
                     bitmap_blocks, max_mapnr)


def _sub_header(f: BinaryIO, d: _DiskDump) -> Tuple[int, ...]:
    """The fields of ``struct kdump_sub_header`` (zeros where the file has none)."""
    fmt = d.endian + _SUB_HEADER
    raw = _read_at(f, d.block_size, struct.calcsize(fmt)).ljust(struct.calcsize(fmt), b"\0")
    return struct.unpack(fmt, raw)


def _popcount(n: int) -> int:
    """Set bits of ``n`` >= 0 (``int.bit_count`` from Python 3.10 on: ~50x faster)."""
    bit_count = getattr(n, "bit_count", None)
    return bit_count() if bit_count is not None else bin(n).count("1")


def _count_bits(f: BinaryIO, offset: int, length: int, first: int, end: int) -> int:
    """Set bits for pfns ``first`` .. ``end - 1`` in the bitmap at ``offset``."""
    count, pfn = 0, 0
    f.seek(offset)
    while length > 0:
        chunk = f.read(min(length, _BITMAP_CHUNK))
        if not chunk:
            break
        bits = int.from_bytes(chunk, "little")
        low, high = max(first - pfn, 0), min(end - pfn, len(chunk) * 8)
        if high > low:
            count += _popcount((bits >> low) & ((1 << (high - low)) - 1))
        pfn += len(chunk) * 8
        length -= len(chunk)
    return count


def _kdump_described(f: BinaryIO, head: bytes) -> Optional[Described]:
    d = _disk_dump(head)
    if d is None or d.status & _DUMP_DH_COMPRESSED_INCOMPLETE:
        return None
    sub = _sub_header(f, d)
    split, start_pfn_64, end_pfn_64, max_mapnr_64 = sub[2], sub[11], sub[12], sub[13]
    max_mapnr = max_mapnr_64 if d.version >= 6 and max_mapnr_64 else d.max_mapnr
    first, end = (start_pfn_64, end_pfn_64) if split else (0, max_mapnr)
    ends = [sub[5] + sub[6], sub[7] + sub[8], sub[9] + sub[10]]  # vmcoreinfo, notes, eraseinfo
    bitmaps = (1 + d.sub_hdr_size) * d.block_size
    half = d.bitmap_blocks * d.block_size // 2
    descriptors = bitmaps + 2 * half
    count = _count_bits(f, bitmaps + half, half, first, end)
    desc_size = struct.calcsize(d.endian + _PAGE_DESC)
    ends.append(descriptors + count * desc_size)
    if count:
        last = _read_at(f, descriptors + (count - 1) * desc_size, desc_size)
        if len(last) < desc_size:
            return Described(max(ends), exact=False)
        offset, size, _flags, _page_flags = struct.unpack(d.endian + _PAGE_DESC, last)
        ends.append(offset + size)
    return Described(max(ends))


@frozen
class KdumpHeader:
    """What a kdump-compressed file says about itself."""

    machine: str
    vmcoreinfo: Optional[bytes]


def read_header(path: str) -> Optional[KdumpHeader]:
    """The machine and vmcoreinfo of a (non-flattened) kdump file; ``None`` if it is not one."""
    with open(path, "rb") as f:
        d = _disk_dump(f.read(512))
        if d is None:
            return None
        sub = _sub_header(f, d)
        offset, size = sub[5], sub[6]
        if not offset or not size:
            return KdumpHeader(d.machine, None)
        return KdumpHeader(d.machine, _read_at(f, offset, size))


# --- the flattened format --------------------------------------------------------

HEADER_SIZE = 4096  # MAX_SIZE_MDF_HEADER
_FILE_HEADER = struct.Struct(">16sqq")  # signature, type, version
_DATA_HEADER = struct.Struct(">qq")  # offset, buf_size
TYPE_FLAT_HEADER = 1
END_FLAG = -1
CHUNK = 1 << 22


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
            raise InputError(f"{path} ends inside a data record: the dump is truncated.",
                             path=str(path))
        dst.write(data)
        size -= len(data)


def unflatten(src_path: Path, dst_path: Path) -> None:
    """Write the kdump file that the flattened file ``src_path`` describes.

    :raises InputError: the file is not flattened or is truncated.
    """
    if not is_flattened(src_path):
        raise InputError(f"{src_path} is not a flattened kdump file.", path=str(src_path))
    with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
        src.seek(HEADER_SIZE)
        while True:
            head = src.read(_DATA_HEADER.size)
            if len(head) < _DATA_HEADER.size:
                raise InputError(f"{src_path} has no end record: the dump is truncated.",
                                 path=str(src_path))
            offset, size = _DATA_HEADER.unpack(head)
            if offset == END_FLAG:
                return
            if offset < 0 or size < 0:
                raise InputError(f"{src_path} has a bad data record ({offset}, {size}).",
                                 path=str(src_path))
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


def main(argv: Optional[List[str]] = None) -> int:
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

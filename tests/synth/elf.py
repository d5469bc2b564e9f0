# SPDX-License-Identifier: LGPL-2.1-or-later
"""Tiny ELF files for target tests: kernel and user core dumps, a vmlinux stub.

Written from the ELF64 layout (little endian, x86_64), with only what drgn and
:func:`kho_inspect.target.elf_build_id` look at:

* :func:`kernel_core`: an ``ET_CORE`` with a ``VMCOREINFO`` note (what
  ``makedumpfile``/kdump or QEMU's ``dump-guest-memory`` with ``-device
  vmcoreinfo`` produce) and one ``PT_LOAD``; drgn opens it as a Linux kernel;
* :func:`user_core`: an ``ET_CORE`` with an ``NT_PRSTATUS`` note only, like a
  process core dump; drgn opens it, but not as a kernel;
* :func:`vmlinux_stub`: an ``ET_EXEC`` whose only content is a GNU build-ID
  note (no DWARF), to stand for a vmlinux of another (or a stripped) build.
"""

import struct
from typing import Sequence, Tuple

__all__ = ["note", "vmcoreinfo_note", "kernel_core", "user_core", "vmlinux_stub"]

_EM_X86_64 = 62
_ET_EXEC, _ET_CORE = 2, 4
_PT_LOAD, _PT_NOTE = 1, 4
_SHT_STRTAB, _SHT_NOTE = 3, 7
_NT_PRSTATUS, _NT_GNU_BUILD_ID = 1, 3
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")


def _pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note (``Elf64_Nhdr``, name and descriptor padded to 4 bytes)."""
    name += b"\0"
    return struct.pack("<III", len(name), len(desc), ntype) + _pad4(name) + _pad4(desc)


def vmcoreinfo_note(release: str, build_id: bytes = b"", kernel_offset: int = 0,
                    swapper_pg_dir: int = 0xFFFF_FFFF_82E3_C000) -> bytes:
    """The ``VMCOREINFO`` note of a kernel ``release`` (``BUILD-ID`` if given)."""
    text = (f"OSRELEASE={release}\nPAGESIZE=4096\nKERNELOFFSET={kernel_offset:x}\n"
            f"SYMBOL(swapper_pg_dir)={swapper_pg_dir:x}\n")
    if build_id:
        text += f"BUILD-ID={build_id.hex()}\n"
    return note(b"VMCOREINFO", 0, text.encode())


def _ident() -> bytes:
    return b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, LSB, version 1


def _core(notes: bytes, loads: Sequence[Tuple[int, int, bytes]]) -> bytes:
    phnum = 1 + len(loads)
    offset = _EHDR.size + _PHDR.size * phnum
    phdrs = [_PHDR.pack(_PT_NOTE, 0, offset, 0, 0, len(notes), len(notes), 4)]
    data = notes
    for vaddr, paddr, blob in loads:
        phdrs.append(_PHDR.pack(_PT_LOAD, 7, offset + len(data), vaddr, paddr, len(blob),
                                len(blob), 4096))
        data += blob
    ehdr = _EHDR.pack(_ident(), _ET_CORE, _EM_X86_64, 1, 0, _EHDR.size, 0, 0, _EHDR.size,
                      _PHDR.size, phnum, _SHDR.size, 0, 0)
    return ehdr + b"".join(phdrs) + data


def kernel_core(release: str, build_id: bytes = b"") -> bytes:
    """A kernel dump: the VMCOREINFO note and one page of RAM at physical 0."""
    return _core(vmcoreinfo_note(release, build_id),
                 [(0xFFFF_8880_0000_0000, 0, bytes(4096))])


def user_core() -> bytes:
    """A process core dump: an (all-zero) ``NT_PRSTATUS`` and no VMCOREINFO."""
    return _core(note(b"CORE", _NT_PRSTATUS, bytes(336)), [(0x400000, 0, bytes(4096))])


def vmlinux_stub(build_id: bytes) -> bytes:
    """An executable with a ``.note.gnu.build-id`` section and nothing else."""
    build_note = note(b"GNU", _NT_GNU_BUILD_ID, build_id)
    names = b"\0.note.gnu.build-id\0.shstrtab\0"
    note_off = _EHDR.size
    names_off = note_off + len(build_note)
    shoff = names_off + len(names)
    shoff += -shoff % 8
    body = (build_note + names).ljust(shoff - _EHDR.size, b"\0")
    sections = [
        bytes(_SHDR.size),
        _SHDR.pack(1, _SHT_NOTE, 2, 0, note_off, len(build_note), 0, 0, 4, 0),
        _SHDR.pack(20, _SHT_STRTAB, 0, 0, names_off, len(names), 0, 0, 1, 0),
    ]
    ehdr = _EHDR.pack(_ident(), _ET_EXEC, _EM_X86_64, 1, 0, 0, shoff, 0, _EHDR.size,
                      _PHDR.size, 0, _SHDR.size, len(sections), 2)
    return ehdr + body + b"".join(sections)

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The kernel log and the boot facts of a synthetic kernel.

:func:`add_printk` writes a printk buffer that drgn's own
``get_printk_records()`` reads: the structured ``log_buf`` of kernels
before the lockless ring buffer (``struct printk_log`` records followed by
their text, ``log_first_idx``/``log_next_idx``/``log_first_seq`` and the
``LOG_CONT`` enumerator), which is what ``kho-inspect`` reads through
:func:`kho_inspect.printk.read_kernel_log`. :func:`add_boot` adds
``saved_command_line`` and ``elfcorehdr_addr`` (a kdump kernel or not).
"""

import struct
from typing import Optional, Sequence

from drgn import FindObjectFlags, Object, Program, TypeEnumerator, TypeMember
from synth.kernel import DIRECT_MAP, SynthKernel

__all__ = ["add_boot", "add_printk"]

_RECORD = 16  # sizeof(struct printk_log) without caller_id


def _types(prog: Program):
    u64 = prog.int_type("unsigned long long", 8, False)
    u16 = prog.int_type("unsigned short", 2, False)
    u8 = prog.int_type("unsigned char", 1, False)
    record = prog.struct_type("printk_log", _RECORD, (
        TypeMember(u64, "ts_nsec", 0), TypeMember(u16, "len", 64),
        TypeMember(u16, "text_len", 80), TypeMember(u16, "dict_len", 96),
        TypeMember(u8, "facility", 112),
        TypeMember(Object(prog, u8, bit_field_size=5), "flags", 120),
        TypeMember(Object(prog, u8, bit_field_size=3), "level", 125)))
    flags = prog.enum_type("log_flags", prog.int_type("unsigned int", 4, False),
                           [TypeEnumerator("LOG_NEWLINE", 2), TypeEnumerator("LOG_CONT", 8)])
    return record, flags


def add_printk(kernel: SynthKernel, lines: Sequence[str], step_ns: int = 1000) -> None:
    """A printk buffer holding ``lines`` (one record each, level 6, timestamps
    ``step_ns`` apart)."""
    prog = kernel.prog
    record, flags = _types(prog)
    kernel.add_type(record)
    kernel.add_type(flags)
    buf = bytearray()
    for i, line in enumerate(lines):
        text = line.encode()
        size = -(-(_RECORD + len(text)) // 8) * 8
        head = struct.pack("<QHHHBB", i * step_ns, size, len(text), 0, 0, 6 << 5)
        buf += (head + text).ljust(size, b"\0")
    buf += bytes(_RECORD)  # a zero-length record: nothing after
    phys = kernel.alloc_phys(len(buf))
    kernel.write_phys(phys, bytes(buf))
    char_p = prog.pointer_type(prog.int_type("char", 1, True))
    u32 = prog.int_type("unsigned int", 4, False)
    u64 = prog.int_type("unsigned long long", 8, False)
    kernel.add_variable("log_buf", char_p, struct.pack("<Q", DIRECT_MAP + phys))
    kernel.add_variable("log_first_idx", u32, struct.pack("<I", 0))
    kernel.add_variable("log_next_idx", u32, struct.pack("<I", len(buf) - _RECORD))
    kernel.add_variable("log_first_seq", u64, struct.pack("<Q", 0))

    def find(prog: Program, name: str, want: FindObjectFlags, filename: Optional[str]):
        if name == "LOG_CONT" and want & FindObjectFlags.CONSTANT:
            return Object(prog, flags, 8)
        return None

    prog.register_object_finder("synth-printk", find, enable_index=-1)


def add_boot(kernel: SynthKernel, command_line: Optional[str] = None,
             kdump: bool = False) -> None:
    """``saved_command_line`` (when given) and ``elfcorehdr_addr``."""
    prog = kernel.prog
    if command_line is not None:
        text = kernel.add_data(command_line.encode() + b"\0")
        kernel.add_variable("saved_command_line",
                            prog.pointer_type(prog.int_type("char", 1, True)),
                            struct.pack("<Q", text))
    value = 0x1000_0000 if kdump else (1 << 64) - 1
    kernel.add_variable("elfcorehdr_addr", prog.int_type("unsigned long long", 8, False),
                        struct.pack("<Q", value))

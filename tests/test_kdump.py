# SPDX-License-Identifier: LGPL-2.1-or-later
"""Dump files: the flattened format QEMU < 8.2 writes, the header hints, file kinds and
the size the headers describe."""

import gzip
import io
import struct
from pathlib import Path
from typing import Optional

import pytest
from synth.elf import kernel_core, vmlinux_stub
from synth.kdump import VMCOREINFO, kdump_file

from kho_inspect.cli import run
from kho_inspect.errors import InputError
from kho_inspect.kdump import (
    HEADER_SIZE,
    Described,
    described_size,
    file_kind,
    is_flattened,
    read_header,
    unflatten,
    unflatten_in_place,
)

PAGES = {pfn: bytes([pfn]) * 4096 for pfn in (0, 1, 2, 7, 40)}


def flatten(records, end=True) -> bytes:
    """The flattened stream of ``records`` [(offset, data)], as makedumpfile -F writes it."""
    head = struct.pack(">16sqq", b"makedumpfile", 1, 1).ljust(HEADER_SIZE, b"\0")
    body = b"".join(struct.pack(">qq", off, len(data)) + data for off, data in records)
    return head + body + (struct.pack(">qq", -1, -1) if end else b"")


def test_unflatten_writes_records_at_their_offsets(tmp_path: Path) -> None:
    # out of order and overlapping the way makedumpfile writes headers after data
    records = [(8192, b"B" * 5000), (0, b"A" * 100), (4096, b"C" * 10)]
    src, dst = tmp_path / "flat", tmp_path / "out"
    src.write_bytes(flatten(records))
    assert is_flattened(src)
    unflatten(src, dst)
    data = dst.read_bytes()
    assert data[:100] == b"A" * 100 and data[100:4096] == bytes(3996)
    assert data[4096:4106] == b"C" * 10 and data[8192:] == b"B" * 5000


def test_unflatten_in_place_and_not_flattened(tmp_path: Path) -> None:
    path = tmp_path / "vmcore"
    path.write_bytes(flatten([(0, kdump_file(PAGES))]))
    assert unflatten_in_place(path) is True
    assert path.read_bytes() == kdump_file(PAGES) and not is_flattened(path)
    assert unflatten_in_place(path) is False


def test_truncated_flattened_file_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "flat"
    src.write_bytes(flatten([(0, b"x" * 100)], end=False)[:-10])
    with pytest.raises(InputError, match="truncated"):
        unflatten(src, tmp_path / "out")
    assert not (tmp_path / "vmcore.unflattening").exists()


def test_read_header_finds_machine_and_vmcoreinfo(tmp_path: Path) -> None:
    path = tmp_path / "vmcore"
    path.write_bytes(kdump_file(PAGES))
    header = read_header(str(path))
    assert header is not None and header.machine == "x86_64"
    assert header.vmcoreinfo == VMCOREINFO
    path.write_bytes(b"\x7fELF" + bytes(600))
    assert read_header(str(path)) is None


def test_flattened_core_is_refused_in_one_sentence(tmp_path: Path, capsys) -> None:
    path = tmp_path / "vmcore"
    path.write_bytes(flatten([(0, kdump_file(PAGES))]))
    assert run(["--core", str(path), "memblock"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"kho-inspect: error: {path} is a flattened kdump file (makedumpfile -F, "
                   "QEMU before 8.2), which drgn cannot read: convert it with makedumpfile -R "
                   "or python3 -m kho_inspect.kdump.")


# --- what a file is and how long its headers say it is ---------------------------


def described(data: bytes, tmp_path: Path) -> Optional[Described]:
    path = tmp_path / "dump"
    path.write_bytes(data)
    with open(path, "rb") as f:
        return described_size(f)


def test_kdump_file_is_as_long_as_its_last_page(tmp_path: Path) -> None:
    data = kdump_file(PAGES)
    assert described(data, tmp_path) == Described(len(data))
    assert described(data[:len(data) // 2], tmp_path) == Described(len(data))


def test_kdump_file_cut_inside_its_descriptors_is_at_least_that_long(tmp_path: Path) -> None:
    data = kdump_file(PAGES)
    descriptors = 4 * 4096  # header, sub-header, two one-block bitmaps
    got = described(data[:descriptors + 30], tmp_path)
    assert got == Described(descriptors + 5 * 24, exact=False)


def test_incomplete_kdump_file_does_not_say(tmp_path: Path) -> None:
    # makedumpfile marks a dump it could not finish (DUMP_DH_COMPRESSED_INCOMPLETE)
    data = kdump_file(PAGES, status=0x8)
    assert described(data[:len(data) // 2], tmp_path) is None


def test_big_endian_kdump_header_is_read(tmp_path: Path) -> None:
    data = bytearray(kdump_file(PAGES))
    # re-encode the fields described_size reads in big endian
    struct.pack_into(">i", data, 8, 6)
    struct.pack_into(">iiiII", data, 424, *struct.unpack_from("<iiiII", data, 424))
    struct.pack_into(">QiiQQQQQQQQQQQ", data, 4096,
                     *struct.unpack_from("<QiiQQQQQQQQQQQ", data, 4096))
    start = 4 * 4096
    for i in range(len(PAGES)):
        struct.pack_into(">QIIQ", data, start + 24 * i,
                         *struct.unpack_from("<QIIQ", data, start + 24 * i))
    assert described(bytes(data), tmp_path) == Described(len(data))


def test_elf_core_is_as_long_as_its_last_segment(tmp_path: Path) -> None:
    data = kernel_core("7.3.4")
    assert described(data, tmp_path) == Described(len(data))
    assert described(data[:100], tmp_path) == Described(64 + 2 * 56, exact=False)


def test_elf32_core(tmp_path: Path) -> None:
    phdr = struct.pack("<IIIIIIII", 1, 52 + 32, 0, 0, 4096, 4096, 7, 4096)  # PT_LOAD
    ehdr = (b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
            + struct.pack("<HHIIIIIHHHHHH", 4, 3, 1, 0, 52, 0, 0, 52, 32, 1, 40, 0, 0))
    data = ehdr + phdr + bytes(4096)
    assert file_kind(data) == "elf-core"
    assert described(data, tmp_path) == Described(len(data))


def test_file_kinds() -> None:
    boot = bytearray(1024)
    boot[0x202:0x206] = b"HdrS"
    assert file_kind(b"") == "empty"
    assert file_kind(kernel_core("7.3.4")) == "elf-core"
    assert file_kind(vmlinux_stub(b"\xab" * 20)) == "elf-executable"
    assert file_kind(kdump_file(PAGES)) == "kdump"
    assert file_kind(flatten([(0, b"x")])) == "flattened"
    assert file_kind(gzip.compress(b"vmcore")) == "gzip"
    assert file_kind(bytes(boot)) == "bzimage"
    assert file_kind(b"hello\n") == "unknown"
    assert described_size(io.BytesIO(b"hello\n")) is None

"""kdump files: the flattened format QEMU < 8.2 writes, and the header hints."""

import struct
from pathlib import Path

import pytest

from kho_inspect.cli import run
from kho_inspect.errors import InputError
from kho_inspect.kdump import (
    HEADER_SIZE,
    KDUMP_SIGNATURE,
    is_flattened,
    read_header,
    unflatten,
    unflatten_in_place,
)


def flatten(records, end=True) -> bytes:
    """The flattened stream of ``records`` [(offset, data)], as makedumpfile -F writes it."""
    head = struct.pack(">16sqq", b"makedumpfile", 1, 1).ljust(HEADER_SIZE, b"\0")
    body = b"".join(struct.pack(">qq", off, len(data)) + data for off, data in records)
    return head + body + (struct.pack(">qq", -1, -1) if end else b"")


def kdump_image(machine=b"x86_64", vmcoreinfo=b"OSRELEASE=7.3.4\nPAGESIZE=4096\n") -> bytes:
    head = bytearray(4096)
    head[:8] = KDUMP_SIGNATURE
    head[8:12] = struct.pack("<i", 6)
    head[272:272 + len(machine)] = machine
    head[428:432] = struct.pack("<i", 4096)
    sub = struct.pack("<QiiQQQQ", 0, 1, 0, 0, 0, 8192, len(vmcoreinfo))
    return bytes(head) + sub.ljust(4096, b"\0") + vmcoreinfo


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
    path.write_bytes(flatten([(0, kdump_image())]))
    assert unflatten_in_place(path) is True
    assert path.read_bytes() == kdump_image() and not is_flattened(path)
    assert unflatten_in_place(path) is False


def test_truncated_flattened_file_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "flat"
    src.write_bytes(flatten([(0, b"x" * 100)], end=False)[:-10])
    with pytest.raises(InputError, match="truncated"):
        unflatten(src, tmp_path / "out")
    assert not (tmp_path / "vmcore.unflattening").exists()


def test_read_header_finds_machine_and_vmcoreinfo(tmp_path: Path) -> None:
    path = tmp_path / "vmcore"
    path.write_bytes(kdump_image())
    header = read_header(str(path))
    assert header is not None and header.machine == "x86_64"
    assert header.vmcoreinfo == b"OSRELEASE=7.3.4\nPAGESIZE=4096\n"
    path.write_bytes(b"\x7fELF" + bytes(600))
    assert read_header(str(path)) is None


def test_flattened_core_is_refused_in_one_sentence(tmp_path: Path, capsys) -> None:
    path = tmp_path / "vmcore"
    path.write_bytes(flatten([(0, kdump_image())]))
    assert run(["--core", str(path), "memblock"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"kho-inspect: error: {path} is a flattened kdump file (makedumpfile -F, "
                   "QEMU before 8.2), which drgn cannot read: convert it with makedumpfile -R "
                   "or python3 -m kho_inspect.kdump.")

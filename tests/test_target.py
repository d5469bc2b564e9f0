# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every way of failing to open a target is one sentence and exit code 2, through the CLI.

Conditions a test machine cannot produce (not root, no /proc/kcore, lockdown,
a file root may not read) are made with monkeypatching; core files, a vmlinux
of another build, truncated and compressed dumps are real files written by
:mod:`synth.elf` and :mod:`synth.kdump`.
"""

import errno
import gzip
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from synth.elf import kernel_core, user_core, vmlinux_stub
from synth.kdump import kdump_file

from kho_inspect import target
from kho_inspect.cli import run
from kho_inspect.errors import EXIT_CANNOT_INSPECT, DebugInfoError, TruncatedDumpError
from kho_inspect.target import elf_build_id

RELEASE = "7.3.4-kho-inspect-test"
KERNEL_ID = bytes.fromhex("ab" * 20)
OTHER_ID = bytes.fromhex("cd" * 20)
PREFIX = "kho-inspect: error: "


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No cached programs, and no vmlinux to find in the working or home directory."""
    target.clear_cache()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    yield
    target.clear_cache()


def fail(capsys, *argv: str) -> str:
    """Run the CLI, check it fails with exit 2 and one sentence; return the sentence."""
    assert run([*argv, "memblock"]) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert err.startswith(PREFIX) and err.count("\n") == 1, err
    message = err[len(PREFIX):].strip()
    assert message.endswith(".") and not re.search(r"[.!?]\s+[A-Z]", message), message
    assert "Traceback" not in err
    return message


@pytest.fixture
def live(tmp_path, monkeypatch):
    """A root user whose /proc/kcore and lockdown file are files under tmp_path."""
    monkeypatch.setattr(target.os, "geteuid", lambda: 0)
    paths = {"kcore": str(tmp_path / "kcore"), "lockdown": str(tmp_path / "lockdown")}
    monkeypatch.setattr(target, "LIVE_PATHS", paths)
    return paths


def refuse(monkeypatch, path: str, code: int) -> None:
    """Make opening ``path`` fail with ``code``, as the kernel does under lockdown or for a
    file this user may not read (the tests may run as root, who may read anything)."""
    real_open = open

    def fake_open(name, *args, **kwargs):
        if str(name) == path:
            raise OSError(code, os.strerror(code), name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(target, "open", fake_open, raising=False)


# --- the live kernel --------------------------------------------------------


def test_not_root(capsys, monkeypatch):
    monkeypatch.setattr(target.os, "geteuid", lambda: 1000)
    assert fail(capsys) == (
        "Reading the live kernel needs root (it opens /proc/kcore): run as root (sudo), or "
        "inspect a dump with --core PATH.")


def test_no_proc_kcore(capsys, live):
    message = fail(capsys)
    assert message.startswith(f"{live['kcore']} does not exist (kernel built without "
                              "CONFIG_PROC_KCORE or /proc not mounted)")
    assert message.endswith("inspect a dump with --core PATH or --qemu SOCKET.")


def test_lockdown(capsys, live, monkeypatch, tmp_path):
    (tmp_path / "kcore").write_bytes(b"")
    (tmp_path / "lockdown").write_text("none [integrity] confidentiality\n")
    refuse(monkeypatch, live["kcore"], errno.EPERM)
    assert fail(capsys).startswith("The kernel is locked down (integrity) and refuses "
                                   f"{live['kcore']}: boot with lockdown=none")


def test_kcore_refused_without_lockdown(capsys, live, monkeypatch, tmp_path):
    (tmp_path / "kcore").write_bytes(b"")
    (tmp_path / "lockdown").write_text("[none] integrity confidentiality\n")
    refuse(monkeypatch, live["kcore"], errno.EACCES)
    assert fail(capsys) == f"Cannot open {live['kcore']} (Permission denied): run as root."


# --- core files -------------------------------------------------------------


def test_core_file_missing(capsys, tmp_path):
    path = tmp_path / "vmcore"
    assert fail(capsys, "--core", str(path)) == (
        f"{path} does not exist: check the path given to --core.")


def test_core_file_is_a_directory(capsys, tmp_path):
    assert fail(capsys, "--core", str(tmp_path)) == (
        f"{tmp_path} is a directory, not a file: give the path of the file itself to --core.")


def test_core_directory_with_a_dump_in_it(capsys, tmp_path):
    (tmp_path / "vmcore").write_bytes(kernel_core(RELEASE))
    (tmp_path / "dmesg.txt").write_text("log\n")
    assert fail(capsys, "--core", str(tmp_path)) == (
        f"{tmp_path} is a directory, not a file: give the file itself, such as "
        f"{tmp_path / 'vmcore'}, to --core.")


def test_core_file_is_a_fifo(capsys, tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)  # opening it would block: refused from its mode
    assert fail(capsys, "--core", str(path)) == (
        f"{path} is a FIFO, not a file: give the path of a file to --core.")


def test_core_file_empty(capsys, tmp_path):
    path = tmp_path / "vmcore"
    path.write_bytes(b"")
    assert fail(capsys, "--core", str(path)) == (
        f"{path} is empty (0 bytes: nothing was ever written to it): give a complete file to "
        "--core.")


def test_core_file_unreadable(capsys, tmp_path, monkeypatch):
    path = tmp_path / "vmcore"
    path.write_bytes(kernel_core(RELEASE))
    refuse(monkeypatch, str(path), errno.EACCES)
    assert fail(capsys, "--core", str(path)) == (
        f"Cannot read {path} (Permission denied): run as a user who may read it (sudo), or "
        "change its mode.")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read a file of mode 000")
def test_core_file_of_mode_000(capsys, tmp_path):
    path = tmp_path / "vmcore"
    path.write_bytes(kernel_core(RELEASE))
    path.chmod(0)
    assert fail(capsys, "--core", str(path)).startswith(f"Cannot read {path} (Permission denied)")


def test_core_file_that_is_not_a_dump(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a core file\n" * 100)
    assert fail(capsys, "--core", str(path)) == (
        f"{path} is not a kernel dump (neither an ELF nor a kdump-compressed file): give a "
        "vmcore, an ELF or kdump-compressed dump with vmcoreinfo, or a QEMU dump-guest-memory "
        "file.")


def test_core_file_compressed(capsys, tmp_path):
    path = tmp_path / "vmcore.gz"
    path.write_bytes(gzip.compress(kernel_core(RELEASE)))
    assert fail(capsys, "--core", str(path)) == (
        f"{path} is gzip-compressed: decompress it first (gunzip) and give the result to --core.")


def test_vmlinux_given_as_core(capsys, tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(vmlinux_stub(KERNEL_ID))
    assert fail(capsys, "--core", str(path)) == (
        f"{path} is an ELF executable (a vmlinux?), not a kernel dump: give it to --vmlinux and "
        "the dump to --core.")


def test_core_file_of_a_process(capsys, tmp_path):
    path = tmp_path / "core.1234"
    path.write_bytes(user_core())
    assert fail(capsys, "--core", str(path)).startswith(
        f"{path} is a core dump but not of a Linux kernel (it has no vmcoreinfo)")


def test_elf_core_cut_in_half(capsys, tmp_path):
    data = kernel_core(RELEASE, KERNEL_ID)
    path = tmp_path / "vmcore"
    path.write_bytes(data[:len(data) // 2])
    assert fail(capsys, "--core", str(path)) == (
        f"{path} is truncated: {len(data) // 2} of {len(data)} bytes (it was cut short while it "
        "was written or copied): take or copy the dump again.")


def test_kdump_core_cut_in_half(capsys, tmp_path):
    # what the issue met: a QEMU kdump-compressed core copied halfway, which drgn refused with
    # "kdump_set_string_attr(KDUMP_ATTR_OSTYPE): Linux kernel text search failed: ..."
    data = kdump_file({pfn: bytes([pfn]) * 4096 for pfn in range(16)})
    path = tmp_path / "vmcore"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(TruncatedDumpError) as info:
        target.open_core(str(path))
    assert (info.value.size, info.value.expected) == (len(data) // 2, len(data))
    assert fail(capsys, "--core", str(path)).startswith(
        f"{path} is truncated: {len(data) // 2} of {len(data)} bytes")


def test_kdump_core_cut_inside_its_page_descriptors(capsys, tmp_path):
    data = kdump_file({pfn: bytes(4096) for pfn in range(16)})
    path = tmp_path / "vmcore"
    path.write_bytes(data[:4 * 4096 + 100])
    assert fail(capsys, "--core", str(path)).startswith(
        f"{path} is truncated: {4 * 4096 + 100} of at least {4 * 4096 + 16 * 24} bytes")


def test_whole_kdump_core_opens(capsys, tmp_path):
    path = tmp_path / "vmcore"
    path.write_bytes(kdump_file({pfn: bytes(4096) for pfn in range(16)}))
    # past every file check and drgn's open, the next step is the debug info
    assert fail(capsys, "--core", str(path)).startswith("No debug info found for kernel 7.3.4")


# --- debug info -------------------------------------------------------------


@pytest.fixture
def vmcore(tmp_path):
    path = tmp_path / "vmcore"
    path.write_bytes(kernel_core(RELEASE, KERNEL_ID))
    return str(path)


def test_no_debug_info_found(capsys, vmcore):
    assert fail(capsys, "--core", vmcore) == (
        f"No debug info found for kernel {RELEASE}: pass --vmlinux PATH to the vmlinux with "
        "DWARF that belongs to it (Debian: install the linux-image-*-dbg package).")


def test_vmlinux_of_another_build(capsys, vmcore, tmp_path):
    vmlinux = tmp_path / "vmlinux-other"
    vmlinux.write_bytes(vmlinux_stub(OTHER_ID))
    assert elf_build_id(str(vmlinux)) == OTHER_ID
    assert fail(capsys, "--core", vmcore, "--vmlinux", str(vmlinux)) == (
        f"{vmlinux} does not match the target kernel {RELEASE} (build ID {OTHER_ID.hex()} != "
        f"{KERNEL_ID.hex()}): pass the vmlinux built together with this kernel.")
    target.clear_cache()
    with pytest.raises(DebugInfoError) as info:
        target.open_program(target.TargetSpec(core=vmcore, vmlinux=str(vmlinux)))
    assert (info.value.build_id, info.value.kernel_build_id) == (OTHER_ID, KERNEL_ID)
    assert info.value.release == RELEASE and info.value.path == str(vmlinux)


def test_vmlinux_of_another_build_found_in_the_usual_place(capsys, vmcore, tmp_path):
    (tmp_path / "vmlinux").write_bytes(vmlinux_stub(OTHER_ID))  # "vmlinux" in the cwd
    assert fail(capsys, "--core", vmcore) == (
        f"The vmlinux found at vmlinux does not match the target kernel {RELEASE} (build ID "
        f"{OTHER_ID.hex()} != {KERNEL_ID.hex()}): pass the vmlinux built together with this "
        "kernel as --vmlinux PATH.")


def test_vmlinux_without_dwarf(capsys, vmcore, tmp_path):
    vmlinux = tmp_path / "vmlinux-stripped"
    vmlinux.write_bytes(vmlinux_stub(KERNEL_ID))
    assert fail(capsys, "--core", vmcore, "--vmlinux", str(vmlinux)) == (
        f"{vmlinux} has no usable debug info for kernel {RELEASE}: pass a vmlinux built with "
        "CONFIG_DEBUG_INFO (not a stripped or compressed image).")


def test_vmlinux_missing(capsys, vmcore, tmp_path):
    path = tmp_path / "nope"
    assert fail(capsys, "--core", vmcore, "--vmlinux", str(path)) == (
        f"{path} does not exist: check the path given to --vmlinux.")


def test_vmlinux_is_a_build_directory(capsys, vmcore, tmp_path):
    build = tmp_path / "linux"
    build.mkdir()
    (build / "vmlinux").write_bytes(vmlinux_stub(KERNEL_ID))
    assert fail(capsys, "--core", vmcore, "--vmlinux", str(build)) == (
        f"{build} is a directory, not a file: give the file itself, such as "
        f"{build / 'vmlinux'}, to --vmlinux.")


def test_vmlinux_unreadable(capsys, vmcore, tmp_path, monkeypatch):
    path = tmp_path / "vmlinux"
    path.write_bytes(vmlinux_stub(KERNEL_ID))
    refuse(monkeypatch, str(path), errno.EACCES)
    assert fail(capsys, "--core", vmcore, "--vmlinux", str(path)).startswith(
        f"Cannot read {path} (Permission denied)")


def test_core_given_as_vmlinux(capsys, vmcore):
    assert fail(capsys, "--core", vmcore, "--vmlinux", vmcore) == (
        f"{vmcore} is an ELF core dump, not a vmlinux: give it to --core and the vmlinux of "
        "that kernel to --vmlinux.")


def test_bzimage_given_as_vmlinux(capsys, vmcore, tmp_path):
    path = tmp_path / "bzImage"
    boot = bytearray(4096)
    boot[0x202:0x206] = b"HdrS"
    path.write_bytes(bytes(boot))
    assert fail(capsys, "--core", vmcore, "--vmlinux", str(path)) == (
        f"{path} is a bootable kernel image (bzImage), which has no debug info: give the "
        "vmlinux of the same build (an ELF file with DWARF) to --vmlinux.")


def test_vmlinux_not_elf(capsys, vmcore, tmp_path):
    path = tmp_path / "System.map"
    path.write_text("ffffffff81000000 T _text\n")
    assert fail(capsys, "--core", vmcore, "--vmlinux", str(path)).startswith(
        f"{path} is not an ELF file: give the vmlinux of the same build")


# --- QEMU -------------------------------------------------------------------


def test_missing_qmp_socket(capsys, tmp_path):
    sock = tmp_path / "qmp.sock"
    assert fail(capsys, "--qemu", str(sock)) == (
        f"The QMP socket {sock} does not exist: start QEMU with -qmp "
        f"unix:{sock},server=on,wait=off -device vmcoreinfo.")


def test_qmp_socket_that_is_a_file(capsys, tmp_path):
    path = tmp_path / "qmp.sock"
    path.write_text("")
    assert fail(capsys, "--qemu", str(path)) == (
        f"{path} is a regular file, not a socket: give the socket of QEMU's -qmp "
        "unix:PATH,server=on,wait=off to --qemu.")


def test_qmp_socket_nobody_listens_on(capsys, tmp_path):
    sock = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.close()  # the socket file stays, as after QEMU exits
    assert fail(capsys, "--qemu", str(sock)).startswith(
        f"Nothing listens on the QMP socket {sock} (has QEMU exited?): start QEMU with -qmp")


# --- through the installed command -------------------------------------------


def kho_inspect_command() -> List[str]:
    script = Path(sys.executable).with_name("kho-inspect")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kho_inspect"]


@pytest.mark.parametrize("make", [
    lambda d: d,
    lambda d: d / "missing",
])
def test_command_exits_2_with_one_line(tmp_path, make):
    core = make(tmp_path)
    proc = subprocess.run([*kho_inspect_command(), "--core", str(core), "memblock"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == EXIT_CANNOT_INSPECT, proc.stderr
    assert proc.stderr.startswith(PREFIX) and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# --- tracebacks -------------------------------------------------------------


def test_debug_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.setattr(target.os, "geteuid", lambda: 1000)
    assert run(["--debug", "memblock"]) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "TargetError" in err
    assert err.rstrip().splitlines()[-1].startswith(PREFIX + "Reading the live kernel needs root")


def test_drgn_warnings_only_with_debug(capsys, caplog, vmcore, tmp_path):
    vmlinux = tmp_path / "vmlinux-other"
    vmlinux.write_bytes(vmlinux_stub(OTHER_ID))
    argv = ["--core", vmcore, "--vmlinux", str(vmlinux), "memblock"]

    def drgn_warnings():
        return [r.getMessage() for r in caplog.records if r.name == "drgn"]

    assert run(argv) == EXIT_CANNOT_INSPECT
    assert drgn_warnings() == []
    target.clear_cache()
    assert run(["--debug", *argv]) == EXIT_CANNOT_INSPECT
    assert any("did not match any loaded modules" in m for m in drgn_warnings())

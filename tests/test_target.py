"""Every way of failing to open a target is one sentence and exit code 2, through the CLI.

Conditions a test machine cannot produce (not root, no /proc/kcore, lockdown)
are made with monkeypatching; core files and a vmlinux of another build are
real ELF files written by :mod:`synth.elf`.
"""

import errno
import re

import pytest
from synth.elf import kernel_core, user_core, vmlinux_stub

from kho_inspect import target
from kho_inspect.cli import run
from kho_inspect.errors import EXIT_CANNOT_INSPECT
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


def refuse_kcore(monkeypatch, kcore: str, code: int) -> None:
    """Make opening ``kcore`` fail with ``code``, as the kernel does under lockdown."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == kcore:
            raise OSError(code, "Operation not permitted", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(target, "open", fake_open, raising=False)


# --- the live kernel --------------------------------------------------------


def test_not_root(capsys, monkeypatch):
    monkeypatch.setattr(target.os, "geteuid", lambda: 1000)
    assert fail(capsys) == (
        "Reading the live kernel needs root (it opens /proc/kcore): run kho-inspect with sudo, "
        "or inspect a dump with --core.")


def test_no_proc_kcore(capsys, live):
    message = fail(capsys)
    assert message.startswith(f"{live['kcore']} does not exist (kernel built without "
                              "CONFIG_PROC_KCORE or /proc not mounted)")


def test_lockdown(capsys, live, monkeypatch, tmp_path):
    (tmp_path / "kcore").write_bytes(b"")
    (tmp_path / "lockdown").write_text("none [integrity] confidentiality\n")
    refuse_kcore(monkeypatch, live["kcore"], errno.EPERM)
    assert fail(capsys).startswith("The kernel is locked down (integrity) and refuses "
                                   f"{live['kcore']}: boot with lockdown=none")


def test_kcore_refused_without_lockdown(capsys, live, monkeypatch, tmp_path):
    (tmp_path / "kcore").write_bytes(b"")
    (tmp_path / "lockdown").write_text("[none] integrity confidentiality\n")
    refuse_kcore(monkeypatch, live["kcore"], errno.EACCES)
    assert fail(capsys).startswith(f"Cannot open {live['kcore']}: ")


# --- core files -------------------------------------------------------------


def test_core_file_missing(capsys, tmp_path):
    path = tmp_path / "vmcore"
    assert fail(capsys, "--core", str(path)) == (
        f"Core file {path} does not exist: check the path given to --core.")


def test_core_file_that_is_not_a_dump(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a core file\n" * 100)
    message = fail(capsys, "--core", str(path))
    assert message.startswith(f"{path} is not a kernel dump drgn can read (")
    assert "give a vmcore" in message


def test_core_file_of_a_process(capsys, tmp_path):
    path = tmp_path / "core.1234"
    path.write_bytes(user_core())
    assert fail(capsys, "--core", str(path)).startswith(
        f"{path} is a core dump but not of a Linux kernel (it has no vmcoreinfo)")


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


# --- QEMU -------------------------------------------------------------------


def test_missing_qmp_socket(capsys, tmp_path):
    sock = tmp_path / "qmp.sock"
    message = fail(capsys, "--qemu", str(sock))
    assert message.startswith(f"Cannot attach to the QEMU guest at {sock} (")
    assert message.endswith(f"start QEMU with -qmp unix:{sock},server=on,wait=off "
                            "-device vmcoreinfo.")


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

# SPDX-License-Identifier: LGPL-2.1-or-later
"""The lab's kernel versions and architectures as parameters, without building or booting:
names, cache keys, QEMU command lines, the initramfs guest's configuration and the
stage facts the host writes for it."""

import json
from pathlib import Path

import pytest

from kho_inspect.errors import LabError
from kho_inspect.lab import digest
from kho_inspect.lab.kernel import (
    ARCHES,
    RECIPE,
    SOURCE_PACKAGE,
    SOURCES,
    kernel_from_dir,
    kernel_key,
    lab_kernel,
)
from kho_inspect.lab.qemu import VmSpec, choose_accel, qemu_argv
from kho_inspect.lab.run import (
    RunOptions,
    _initramfs_env,
    expected_cmdline,
    initramfs_stage,
    run_arch,
    stage_commands,
)


def test_names_carry_version_and_arch():
    assert lab_kernel("7.2").build.source.package == "linux-source-7.2"
    assert lab_kernel("7.2").build.fragment == "lab-7.2.config"
    assert lab_kernel("7.3", "arm64").name == "arm64/7.3"
    assert lab_kernel("arm64/7.3", "arm64").arch == "arm64"
    assert lab_kernel("7.3", "x86_64").arch == "x86_64"
    with pytest.raises(LabError, match="built for arm64, not x86_64"):
        lab_kernel("arm64/7.3", "x86_64")
    with pytest.raises(LabError, match="no kernel called 'arm64/7.2'"):
        lab_kernel("7.2", "arm64")
    with pytest.raises(LabError, match="no architecture 'riscv64'"):
        lab_kernel("7.3", "riscv64")
    assert SOURCES["7.2"].apt_dir != SOURCES["7.3"].apt_dir  # sid never shadows backports


def test_keys_include_arch_and_package():
    plain = kernel_key("7.3.4-1", "F")
    assert plain == digest([SOURCE_PACKAGE, "7.3.4-1", "F", RECIPE])  # x86_64 keys unchanged
    assert kernel_key("7.3.4-1", "F", arch="arm64") != plain
    assert kernel_key("7.3.4-1", "F", package="linux-source-7.2") != plain


def test_arm64_qemu_argv(tmp_path: Path):
    spec = VmSpec(bzimage=tmp_path / "Image", rootfs=None, cmdline="console=ttyAMA0",
                  serial_log=tmp_path / "s", qmp_socket=tmp_path / "q", arch="arm64",
                  initrd=tmp_path / "initramfs.cpio")
    argv = qemu_argv(spec)
    assert argv[:5] == ["qemu-system-aarch64", "-M", "virt", "-accel", "tcg"]
    assert argv[argv.index("-cpu") + 1].startswith("max")
    assert argv[argv.index("-initrd") + 1] == str(tmp_path / "initramfs.cpio")
    assert "-virtfs" not in argv  # no 9p root
    assert choose_accel("auto", spec.bzimage, "arm64")[0] == "tcg"
    with pytest.raises(LabError, match="cannot run an arm64 guest"):
        choose_accel("kvm", spec.bzimage, "arm64")


def test_arm64_command_line_and_commands():
    opts = RunOptions(out=Path("/tmp/o"), kernel="7.3", arch="arm64", hops=2,
                      stage_append={"n1": "x=1"})
    assert run_arch(opts) == "arm64"
    line = expected_cmdline(opts, "n0").split()
    assert "console=ttyAMA0" in line and not any(w.startswith(("root=", "init=")) for w in line)
    # no kho-inspect in the guest: the host runs the snapshot with the other commands
    n0 = stage_commands(opts, "n0")
    assert n0.before_kexec == () and n0.inspect[-1].startswith("snapshot ")
    assert stage_commands(opts, "n2").inspect[-1].startswith("report ")
    env = _initramfs_env(opts, "/lab/kernel/Image")
    assert "HOPS=2\n" in env and "IMAGE=/lab/kernel/Image\n" in env
    assert "CMDLINE_n1='" in env and "x=1'" in env.split("CMDLINE_n1=")[1].split("\n")[0]
    x86 = RunOptions(out=Path("/tmp/o"), kernel="7.2")
    assert run_arch(x86) == "x86_64" and "console=ttyS0" in expected_cmdline(x86, "n0")


def test_kernel_dir_per_arch(tmp_path: Path):
    (tmp_path / "arch" / "arm64" / "boot").mkdir(parents=True)
    (tmp_path / "arch" / "arm64" / "boot" / "Image").write_bytes(b"MZ")
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    kernel = kernel_from_dir(tmp_path, "arm64")
    assert kernel.bzimage.name == "Image" and kernel.arch == "arm64"
    with pytest.raises(LabError, match="not an x86_64 kernel build tree"):
        kernel_from_dir(tmp_path)
    assert ARCHES["arm64"].make_variables() == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    assert ARCHES["x86_64"].make_variables() == []


def test_initramfs_stage_facts(tmp_path: Path):
    d = tmp_path / "n1"
    (d / "kho" / "out").mkdir(parents=True)
    (d / "kho" / "in").mkdir()
    (d / "host").mkdir()
    (d / "release").write_text("7.3.4\n")
    (d / "cmdline").write_text("console=ttyAMA0 kho=on\n")
    (d / "dmesg.txt").write_text("test_kho: KHO restore succeeded\n"
                                 "Revived memory reservation 'khoinspect' from KHO\n")
    (d / "memfd_in.json").write_text(json.dumps({"verified": True, "bad_blocks": 0}))
    (d / "kexec_loaded").write_text("console=ttyAMA0 kho=on\n")
    (d / "hugepages.json").write_text('{"hugepages-1048576kB": {"nr_hugepages": 2}}')
    (d / "host" / "memblock.json").write_text(json.dumps(
        {"reserve_mem": [{"name": "khoinspect", "start": 1 << 30, "size": 16 << 20}]}))
    stage = initramfs_stage(d)
    assert stage["kho_enabled"] and stage["kho_boot"] and stage["kexec_loaded"]
    assert stage["test_kho"] == "restore succeeded" and stage["memfd_in"]["verified"]
    assert stage["reserve_mem"] == {"name": "khoinspect", "revived": True, "start": 1 << 30,
                                    "size": 16 << 20}
    assert stage["hugepages"]["hugepages-1048576kB"]["nr_hugepages"] == 2
    assert "memfd_out" not in stage and stage["index"] == 1

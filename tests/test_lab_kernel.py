# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lab kernels by name and the patched kernel's incremental build, without the kernel:
a miniature source tree whose Makefile builds one object per source file, with the
real ``make``, ``cp -al``/``cp -a`` and ``patch`` the lab uses on linux-source-7.3."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from kho_inspect.errors import LabError
from kho_inspect.lab import cache_lock, digest, vm_dir
from kho_inspect.lab import kernel as lab_kernel_module
from kho_inspect.lab.kernel import (
    BUILD_DIR,
    KERNEL_NAMES,
    LAB_KERNELS,
    PLAIN,
    RECIPE,
    SOURCE_PACKAGE,
    TREE_KEY,
    cached_kernel,
    ensure_kernel,
    kernel_key,
    lab_kernel,
    patch_files,
    patched_paths,
)

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("make", "patch", "cp")),
                                reason="needs make, patch and cp")

VERSION = "7.3.4-1~test"
FRAGMENT = "CONFIG_64BIT=y\n"
# A kbuild in miniature: one "object" per mm/*.c and include/*.h, vmlinux from all of
# them, one kbuild-style step line per command, LOCALVERSION in the release.
MAKEFILE = textwrap.dedent("""\
    SRCS := $(notdir $(wildcard $(CURDIR)/mm/*.c))
    OBJS := $(SRCS:%.c=$(O)/mm/%.o)
    bzImage vmlinux: $(O)/vmlinux
    $(O)/mm/%.o: $(CURDIR)/mm/%.c $(wildcard $(CURDIR)/include/*.h)
    \t@echo "  CC      mm/$*.o"
    \t@mkdir -p $(O)/mm && cat $^ > $@
    $(O)/vmlinux: $(OBJS)
    \t@echo "  LD      vmlinux"
    \t@mkdir -p $(O)/arch/x86/boot $(O)/include/config
    \t@cat $^ > $@ && cp $@ $(O)/arch/x86/boot/bzImage && echo map > $(O)/System.map
    \t@echo 7.3.4$(LOCALVERSION) > $(O)/include/config/kernel.release
    olddefconfig:
    \t@true
    .PHONY: bzImage vmlinux olddefconfig
    """)
PATCH = textwrap.dedent("""\
    From 0 Mon Sep 17 00:00:00 2001
    Subject: [PATCH] memblock: a flag

    ---
    diff --git a/include/memblock.h b/include/memblock.h
    --- a/include/memblock.h
    +++ b/include/memblock.h
    @@ -1 +1,2 @@
     #define MEMBLOCK_KHO_SCRATCH 0x40
    +#define MEMBLOCK_KHO_UNPRESERVED 0x100
    diff --git a/mm/memblock.c b/mm/memblock.c
    --- a/mm/memblock.c
    +++ b/mm/memblock.c
    @@ -1 +1,2 @@
     memblock
    +unpreserved
    """)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Path]:
    """A cache with an unpacked miniature source and a vm/ with the fragment and one
    patch series for 7.3+unpreserved."""
    cache, vm = tmp_path / "cache", tmp_path / "vm"
    src = cache / "src" / SOURCE_PACKAGE
    (src / "mm").mkdir(parents=True)
    (src / "include").mkdir()
    (src / "Makefile").write_text(MAKEFILE)
    (src / ".kho-inspect-version").write_text(VERSION + "\n")
    (src / "include" / "memblock.h").write_text("#define MEMBLOCK_KHO_SCRATCH 0x40\n")
    for name in ("memblock", "mm_init", "page_alloc"):
        (src / "mm" / f"{name}.c").write_text(f"{name}\n")
    _age(src)
    (vm / "patches" / "7.3+unpreserved").mkdir(parents=True)
    (vm / "lab.config").write_text(FRAGMENT)
    (vm / "patches" / "7.3+unpreserved" / "0001-flag.patch").write_text(PATCH)
    monkeypatch.setenv("KHO_INSPECT_CACHE", str(cache))
    monkeypatch.setattr(lab_kernel_module, "vm_dir", lambda: vm)
    return {"cache": cache, "src": src, "vm": vm}


def _age(tree: Path, seconds: float = 3600) -> None:
    """Date every file of ``tree`` back, as an unpacked source is."""
    when = os.path.getmtime(tree) - seconds
    for path in tree.rglob("*"):
        os.utime(path, (when, when))


def _steps(meta_dir: Path) -> int:
    return json.loads((meta_dir / "build.json").read_text())["build_steps"]


def _plain_key() -> str:
    return kernel_key(VERSION, FRAGMENT)


# --- names ------------------------------------------------------------------------------

def test_kernel_names():
    assert KERNEL_NAMES == ("7.3", "7.3+unpreserved", "7.3+unpreserved-broken", "7.2", "arm64/7.3")
    broken = lab_kernel("7.3+unpreserved-broken")
    assert broken.build == lab_kernel("7.3+unpreserved").build
    assert broken.cmdline == ("kho_lab_hugetlb_in_scratch",)
    assert lab_kernel("7.3+unpreserved").cmdline == lab_kernel(PLAIN).cmdline == ()
    assert "kho_lab_hugetlb_in_scratch" in broken.description
    assert broken.to_json()["cmdline"] == ["kho_lab_hugetlb_in_scratch"]


def test_unknown_kernel_name_is_one_sentence():
    with pytest.raises(LabError, match=r"no kernel called '7\.4': choose one of 7\.3, "):
        lab_kernel("7.4")
    with pytest.raises(LabError):
        ensure_kernel("7.4")


def test_shipped_patch_series():
    """The real series of 7.3+unpreserved, in order; the plain kernel has none."""
    files = patch_files(LAB_KERNELS["7.3+unpreserved"].build)
    assert [p.parent for p in files] == [vm_dir() / "patches" / "7.3+unpreserved"] * len(files)
    assert [p.name[:4] for p in files] == [f"{i:04d}" for i in range(1, len(files) + 1)]
    assert patch_files(LAB_KERNELS[PLAIN].build) == []
    touched = sorted({rel for p in files for rel in patched_paths(p.read_text())})
    assert touched == ["include/linux/memblock.h", "kernel/liveupdate/kexec_handover.c",
                       "mm/memblock.c"]


def test_missing_series_is_an_error(lab: Dict[str, Path]):
    shutil.rmtree(lab["vm"] / "patches")
    with pytest.raises(LabError, match=r"holds no \*\.patch file: the 7\.3\+unpreserved "):
        ensure_kernel("7.3+unpreserved")


# --- keys --------------------------------------------------------------------------------

def test_plain_key_is_unchanged():
    """Patched kernels must not invalidate the cached plain kernel."""
    assert kernel_key(VERSION, FRAGMENT) == digest([SOURCE_PACKAGE, VERSION, FRAGMENT, RECIPE])


def test_patched_key_covers_the_patches():
    base = kernel_key(VERSION, FRAGMENT, [("0001-a.patch", b"x")], "-unpreserved")
    assert base != kernel_key(VERSION, FRAGMENT)
    assert base != kernel_key(VERSION, FRAGMENT, [("0001-a.patch", b"y")], "-unpreserved")
    assert base != kernel_key(VERSION, FRAGMENT, [("0002-a.patch", b"x")], "-unpreserved")
    assert base != kernel_key(VERSION, FRAGMENT, [("0001-a.patch", b"x")], "-other")
    assert base != kernel_key(VERSION, FRAGMENT,
                              [("0001-a.patch", b"x"), ("0002-b.patch", b"")], "-unpreserved")


# --- builds ------------------------------------------------------------------------------

def _build_plain(lab: Dict[str, Path]):
    kernel = ensure_kernel(PLAIN)
    tree = lab["src"] / BUILD_DIR
    assert (tree / TREE_KEY).read_text().strip() == kernel.key == _plain_key()
    return kernel


def test_plain_build_in_the_source_tree(lab: Dict[str, Path]):
    old = lab["cache"] / "kernel" / "build"  # where the plain kernel was built before
    old.mkdir(parents=True)
    kernel = _build_plain(lab)
    assert kernel.name == PLAIN and kernel.release == "7.3.4"
    assert kernel.bzimage.parent == lab["cache"] / "kernel" / kernel.key
    assert _steps(kernel.bzimage.parent) == 4  # three objects and vmlinux
    assert not old.exists()
    assert cached_kernel(kernel.key) == kernel
    assert ensure_kernel(PLAIN) == kernel  # cached: no build
    link = lab["cache"] / "vmlinux" / "7.3.4" / "vmlinux"
    assert link.resolve() == kernel.vmlinux


def _files(tree: Path) -> Dict[str, tuple]:
    return {p.relative_to(tree).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(tree.rglob("*")) if p.is_file()}


def test_patched_build_is_incremental_and_leaves_plain_alone(lab: Dict[str, Path]):
    plain = _build_plain(lab)
    before = _files(lab["src"])
    kernel = ensure_kernel("7.3+unpreserved")
    assert _files(lab["src"]) == before  # source and build tree, contents and dates
    source = lab["src"].with_name(f"{SOURCE_PACKAGE}+unpreserved")
    meta = json.loads((kernel.bzimage.parent / "build.json").read_text())
    assert meta["incremental"] is True and meta["base_key"] == plain.key
    assert meta["name"] == kernel.name == "7.3+unpreserved"
    assert meta["release"] == kernel.release == "7.3.4-unpreserved"
    assert [p["file"] for p in meta["patches"]] == ["0001-flag.patch"]
    # every object depends on the patched header: all rebuild, the copied tree is used
    assert meta["build_steps"] == 4
    assert kernel.key not in (plain.key, None)
    assert b"unpreserved" in kernel.vmlinux.read_bytes()
    assert b"unpreserved" not in plain.vmlinux.read_bytes()
    assert (source / BUILD_DIR / TREE_KEY).read_text().strip() == kernel.key
    # unpatched files are still links of the plain source, patched ones are not
    assert (source / "mm" / "mm_init.c").samefile(lab["src"] / "mm" / "mm_init.c")
    assert not (source / "mm" / "memblock.c").samefile(lab["src"] / "mm" / "memblock.c")
    assert ensure_kernel("7.3+unpreserved-broken") == kernel  # the same build
    assert (lab["cache"] / "vmlinux" / "7.3.4-unpreserved" / "vmlinux").resolve() \
        == kernel.vmlinux


def test_only_dependents_of_the_patched_files_rebuild(lab: Dict[str, Path]):
    _build_plain(lab)
    series = lab["vm"] / "patches" / "7.3+unpreserved" / "0001-flag.patch"
    series.write_text(PATCH[PATCH.index("diff --git a/mm/"):])  # mm/memblock.c only
    kernel = ensure_kernel("7.3+unpreserved")
    assert _steps(kernel.bzimage.parent) == 2  # memblock.o and vmlinux


def test_patched_build_without_plain_tree_is_a_full_build(lab: Dict[str, Path],
                                                          caplog: pytest.LogCaptureFixture):
    kernel = ensure_kernel("7.3+unpreserved")
    meta = json.loads((kernel.bzimage.parent / "build.json").read_text())
    assert meta["incremental"] is False and meta["base_key"] is None
    assert _steps(kernel.bzimage.parent) == 4
    assert any("building 7.3+unpreserved from scratch" in r.getMessage()
               for r in caplog.records)
    assert not (lab["src"] / BUILD_DIR).exists()


def test_stale_plain_tree_is_not_used(lab: Dict[str, Path]):
    _build_plain(lab)
    (lab["src"] / BUILD_DIR / TREE_KEY).write_text("another-key\n")
    kernel = ensure_kernel("7.3+unpreserved")
    assert json.loads((kernel.bzimage.parent / "build.json").read_text())["incremental"] \
        is False


def test_patch_that_does_not_apply(lab: Dict[str, Path]):
    _build_plain(lab)
    series = lab["vm"] / "patches" / "7.3+unpreserved" / "0001-flag.patch"
    series.write_text(PATCH.replace(" memblock\n", " something else\n"))
    with pytest.raises(LabError, match=r"Cannot apply 0001-flag\.patch to "):
        ensure_kernel("7.3+unpreserved")
    assert (lab["src"] / "mm" / "memblock.c").read_text() == "memblock\n"


def test_build_writing_through_a_link_is_caught(lab: Dict[str, Path]):
    """A build that changes a file it shares with the plain source stops the lab."""
    _build_plain(lab)
    makefile = lab["src"] / "Makefile"
    makefile.write_text(MAKEFILE + textwrap.dedent("""\
        $(O)/vmlinux: | touch-source
        touch-source:
        \t@echo "  TOUCH   mm/mm_init.c" && echo touched >> $(CURDIR)/mm/mm_init.c
        .PHONY: touch-source
        """))
    _age(lab["src"])
    with pytest.raises(LabError, match=r"changed 1 file\(s\) of the plain source through hard "
                                       r"links \(.*mm/mm_init\.c\)"):
        ensure_kernel("7.3+unpreserved")


def test_failed_build_leaves_no_tree_key(lab: Dict[str, Path]):
    _build_plain(lab)
    (lab["src"] / "mm" / "broken.c").write_text("x\n")
    makefile = lab["src"] / "Makefile"
    makefile.write_text(MAKEFILE.replace("$(O)/mm/%.o: ", "$(O)/mm/broken.o:\n\t@false\n"
                                         "$(O)/mm/%.o: "))
    with pytest.raises(LabError, match=r"The kernel build failed \(make exited 2"):
        ensure_kernel(PLAIN, force=True)
    assert not (lab["src"] / BUILD_DIR / TREE_KEY).exists()


def test_iter_kernels_lists_both(lab: Dict[str, Path]):
    _build_plain(lab)
    ensure_kernel("7.3+unpreserved")
    names = sorted(str(k.name) for k in lab_kernel_module.iter_kernels())
    assert names == ["7.3", "7.3+unpreserved"]


def test_cache_lock_is_held_across_processes_and_reentrant(tmp_path, monkeypatch):
    monkeypatch.setenv("KHO_INSPECT_CACHE", str(tmp_path))
    probe = ("import fcntl, sys\n"
             "f = open(sys.argv[1], 'a')\n"
             "try:\n"
             "    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n"
             "    sys.exit(3)\n")

    def other_process_can_lock() -> bool:
        proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / ".lock")])
        return proc.returncode == 0

    with cache_lock("a lab kernel"):
        with cache_lock("the guest root filesystem"):  # re-entrant: no deadlock
            assert not other_process_can_lock()
        assert not other_process_can_lock()  # still held by the outer one
    assert other_process_can_lock()

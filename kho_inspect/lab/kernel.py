# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Lab kernel
----------

Fetch Debian's ``linux-source-<version>`` with a private apt configuration (no
system-wide install, nothing under ``/etc/apt`` touched), configure it from a
fragment in ``vm/`` the way ``tools/testing/selftests/kho/vmtest.sh`` does (the
fragment as the whole ``.config``, then ``make olddefconfig``), check that
every option of the fragment survived, build the boot image and ``vmlinux``
with a progress display, and cache the results.

A lab kernel is a source version (:data:`SOURCES`: the Debian package and the
apt source that carries it) built for an architecture (:data:`ARCHES`: the
kbuild ``ARCH``, the cross compiler, the boot image) from a fragment. The lab
knows its kernels by name (:data:`LAB_KERNELS`, ``--kernel``; a name of
another architecture than x86_64 starts with it, ``arm64/7.3``):

``7.3``
    the plain source of ``linux-source-7.3`` (trixie-backports), ``vm/lab.config``:
    ``INTEL_TDX_HOST`` on, so x86 keeps memblock after boot.
``7.2``
    ``linux-source-7.2`` (sid), ``vm/lab-7.2.config``: no ``INTEL_TDX_HOST``, so
    memblock is discarded after boot, as on most x86 hosts.
``arm64/7.3``
    ``linux-source-7.3`` cross-built for arm64 (``aarch64-linux-gnu-``),
    ``vm/lab-arm64.config``; the boot image is ``Image``.
``7.3+unpreserved``
    the source with the patch series ``vm/patches/7.3+unpreserved/*.patch``
    applied (``MEMBLOCK_KHO_UNPRESERVED``; boot-time gigantic pages from
    unpreserved memory only), release ``7.3.4-unpreserved``.
``7.3+unpreserved-broken``
    the same kernel, booted with ``kho_lab_hugetlb_in_scratch`` on every
    command line (a lab-only parameter of the series: boot-time gigantic pages
    come from KHO scratch, the bug the series prevents).

A patched kernel is built incrementally from the plain one. The plain build
tree lives in the source tree (``O=<source>/build-lab``); kbuild then names the
source ``..`` (Makefile, "Building in a subdirectory of the source"), so no
command line or dependency file holds an absolute path. The patched source is
a hard-link copy of the plain source (``cp -al``) with a real copy of the plain
build tree (``cp -a``: make rewrites some outputs in place, which would change
the plain tree through a hard link); ``patch`` replaces the files it changes
(breaking their links, which is checked), and make rebuilds only what depends
on them. Without a complete plain build tree the patched kernel is built from
scratch (a warning says so).

Cache layout (under :func:`~kho_inspect.lab.cache_root`)::

    apt/, apt-sid/                      private apt state per apt source (lists, .debs)
    src/linux-source-7.3/               unpacked source, version in .kho-inspect-version
    src/linux-source-7.3/build-lab/     the plain x86_64 kernel's build tree (its key in
                                        .kho-inspect-key once a build completed)
    src/linux-source-7.3/build-lab-arm64/   the same for arm64
    src/linux-source-7.3+unpreserved/   hard links to the source, the patched files,
                                        and its own build-lab/
    kernel/<key>/                       bzImage (Image on arm64), vmlinux, config,
                                        System.map, build.json

``<key>`` hashes the source package and its version, the fragment's content, the
architecture (x86_64 keys keep the form they had before there were others), and
for a patched kernel the patches' names and contents and its release suffix.

Messages go to the ``kho_inspect.lab.kernel`` logger; build progress to
``kho_inspect.lab.kernel.progress``: a record at INFO every 30 s and, when that
logger is enabled for DEBUG, one at DEBUG every 0.2 s for a live status line.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from kho_inspect.errors import LabError
from kho_inspect.lab import (
    cache_root,
    digest,
    holding_cache_lock,
    require_tools,
    run_checked,
    vm_dir,
)

__all__ = (
    "SOURCE_PACKAGE",
    "APT_SOURCES",
    "KCFLAGS",
    "Source",
    "SOURCES",
    "Arch",
    "ARCHES",
    "DEFAULT_ARCH",
    "PLAIN",
    "KernelBuild",
    "LabKernel",
    "LAB_KERNELS",
    "KERNEL_NAMES",
    "lab_kernel",
    "patch_files",
    "patched_paths",
    "Kernel",
    "PrivateApt",
    "parse_config",
    "missing_options",
    "kernel_key",
    "ensure_source",
    "ensure_kernel",
    "cached_kernel",
    "kernel_from_dir",
)

SOURCE_PACKAGE = "linux-source-7.3"
APT_SOURCES = "deb http://deb.debian.org/debian trixie-backports main\n"
SID_SOURCES = "deb http://deb.debian.org/debian sid main\n"
# GCC's variable tracking (location lists of local variables and parameters) costs a third
# of a DWARF5 build's compile time (mm/, kernel/sched/ and fs/proc/ of the 7.3 lab config
# with -j2: 98 s with it, 62 s without) and serves only a debugger's view of stack-frame
# variables; drgn finds types, globals and their addresses without it, which is all
# kho-inspect reads. See README.md#the-kernel-lab (build times).
KCFLAGS = "-fno-var-tracking"
# Bump when the recipe (targets, make variables) changes in a way that changes the output.
RECIPE = f"fragment>.config; make olddefconfig; make KCFLAGS={KCFLAGS} bzImage vmlinux; v2"
BUILD_TOOLS = ("make", "gcc", "flex", "bison", "bc", "apt-get", "dpkg-deb", "tar", "xz")
PATCH_TOOLS = ("patch", "cp")
PLAIN = "7.3"
BUILD_DIR = "build-lab"  # the O= tree, a direct subdirectory of its source (relative srctree)
TREE_KEY = ".kho-inspect-key"  # in a build tree: the key of its last complete build
ARTIFACTS = {"vmlinux": "vmlinux", "config": ".config", "System.map": "System.map"}
# kbuild lines ("  CC      mm/memblock.o") of a cold build of the lab config; refined by
# the last build's own count, which build.json records.
DEFAULT_BUILD_STEPS = 2332
# The same for a patched kernel built from the plain build tree.
DEFAULT_INCREMENTAL_STEPS = 250
_PATCHED_FILE = re.compile(r"^\+\+\+ [^/\s]+/(\S+)", re.MULTILINE)
_STEP = re.compile(r"^\s{2}([A-Z][A-Z0-9_\-]*)\s+(\S+)")
_OPTION = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
PROGRESS_EVERY = 30.0  # seconds between INFO progress records
PROGRESS_TICK = 0.2  # seconds between DEBUG progress records (a live status line)

log = logging.getLogger(__name__)
progress_log = logging.getLogger(f"{__name__}.progress")


@dataclass(frozen=True)
class Source:
    """A kernel version the lab builds: Debian's ``package`` from the apt ``sources``
    line, with its private apt state in ``<cache>/<apt_dir>/``."""

    version: str
    package: str
    sources: str
    apt_dir: str


SOURCES: Dict[str, Source] = {s.version: s for s in (
    Source("7.3", SOURCE_PACKAGE, APT_SOURCES, "apt"),
    Source("7.2", "linux-source-7.2", SID_SOURCES, "apt-sid"),
)}


@dataclass(frozen=True)
class Arch:
    """An architecture of the lab: kbuild's ``ARCH``, the ``CROSS_COMPILE`` prefix on
    an x86_64 host, the boot image (make target and its path in the build tree) and the
    O= directory of its plain build in the source tree."""

    name: str
    kbuild: str
    cross_compile: str
    image: str
    image_path: str
    build_dir: str

    def make_variables(self) -> List[str]:
        out = [f"ARCH={self.kbuild}"] if self.name != DEFAULT_ARCH else []
        return out + ([f"CROSS_COMPILE={self.cross_compile}"] if self.cross_compile else [])

    def tools(self) -> Tuple[str, ...]:
        return (f"{self.cross_compile}gcc",) if self.cross_compile else ()


DEFAULT_ARCH = "x86_64"
ARCHES: Dict[str, Arch] = {a.name: a for a in (
    Arch(DEFAULT_ARCH, "x86", "", "bzImage", "arch/x86/boot/bzImage", BUILD_DIR),
    Arch("arm64", "arm64", "aarch64-linux-gnu-", "Image", "arch/arm64/boot/Image",
         BUILD_DIR + "-arm64"),
)}


@dataclass(frozen=True)
class KernelBuild:
    """A kernel the lab builds: ``source`` for ``arch`` from ``vm/<fragment>``, plain
    (``suffix`` empty) or with the patch series ``vm/patches/<version><suffix>/``
    applied. ``localversion`` ends the patched kernel's release, so that its debug info
    is found by release."""

    suffix: str = ""
    localversion: str = ""
    version: str = PLAIN
    arch: str = DEFAULT_ARCH
    fragment: str = "lab.config"

    @property
    def name(self) -> str:
        prefix = "" if self.arch == DEFAULT_ARCH else f"{self.arch}/"
        return prefix + self.version + self.suffix

    @property
    def patched(self) -> bool:
        return bool(self.suffix)

    @property
    def source(self) -> Source:
        return SOURCES[self.version]

    @property
    def target(self) -> Arch:
        return ARCHES[self.arch]

    @property
    def plain(self) -> "KernelBuild":
        return KernelBuild(version=self.version, arch=self.arch, fragment=self.fragment)


@dataclass(frozen=True)
class LabKernel:
    """A kernel ``--kernel`` names: what is built, and the words the lab adds to
    every stage's command line when it boots it."""

    name: str
    build: KernelBuild
    description: str
    cmdline: Tuple[str, ...] = ()

    @property
    def arch(self) -> str:
        return self.build.arch

    def to_json(self) -> Dict[str, object]:
        return {"name": self.name, "build": self.build.name, "description": self.description,
                "cmdline": list(self.cmdline), "arch": self.arch,
                "version": self.build.version}


_UNPRESERVED = KernelBuild("+unpreserved", "-unpreserved")
LAB_KERNELS: Dict[str, LabKernel] = {k.name: k for k in (
    LabKernel(PLAIN, KernelBuild(), f"Linux 7.3 from Debian's {SOURCE_PACKAGE}"),
    LabKernel("7.3+unpreserved", _UNPRESERVED,
              "7.3 with vm/patches/7.3+unpreserved: MEMBLOCK_KHO_UNPRESERVED marks the "
              "memory the previous kernel did not preserve, boot-time gigantic pages come "
              "from it only"),
    LabKernel("7.3+unpreserved-broken", _UNPRESERVED,
              "7.3+unpreserved booted with kho_lab_hugetlb_in_scratch on every command "
              "line: boot-time gigantic pages come from KHO scratch (a deliberate bug)",
              cmdline=("kho_lab_hugetlb_in_scratch",)),
    LabKernel("7.2", KernelBuild(version="7.2", fragment="lab-7.2.config"),
              "Linux 7.2 from Debian's linux-source-7.2 (sid), without INTEL_TDX_HOST: "
              "memblock is discarded after boot"),
    LabKernel("arm64/7.3", KernelBuild(arch="arm64", fragment="lab-arm64.config"),
              f"Linux 7.3 from Debian's {SOURCE_PACKAGE} cross-built for arm64 (Image; "
              "memblock kept, KHO data in /chosen)"),
)}
KERNEL_NAMES: Tuple[str, ...] = tuple(LAB_KERNELS)


def lab_kernel(name: str, arch: Optional[str] = None) -> LabKernel:
    """The lab kernel called ``name``; with ``arch`` the name may leave the architecture
    out (``lab_kernel("7.3", "arm64")`` is ``arm64/7.3``).

    :raises LabError: for a name or architecture the lab does not know, or an ``arch``
        that contradicts the name's.
    """
    if arch is not None and arch not in ARCHES:
        raise LabError(f"The lab has no architecture {arch!r}: choose one of "
                       f"{', '.join(ARCHES)}.")
    full = name
    if arch not in (None, DEFAULT_ARCH) and "/" not in name:
        full = f"{arch}/{name}"
    try:
        kernel = LAB_KERNELS[full]
    except KeyError:
        raise LabError(f"The lab has no kernel called {full!r}: choose one of "
                       f"{', '.join(KERNEL_NAMES)}.") from None
    if arch is not None and kernel.arch != arch:
        raise LabError(f"The lab kernel {name!r} is built for {kernel.arch}, not {arch}.")
    return kernel


@dataclass(frozen=True)
class Kernel:
    """A kernel the lab can boot: ``bzImage`` and the ``vmlinux`` built with it;
    ``name`` is the build's name (:class:`KernelBuild`) for a lab-built kernel."""

    bzimage: Path  # the boot image: bzImage on x86_64, Image on arm64
    vmlinux: Path
    key: Optional[str] = None
    source_version: Optional[str] = None
    name: Optional[str] = None
    release: Optional[str] = None
    arch: str = DEFAULT_ARCH

    def to_json(self) -> Dict[str, Optional[str]]:
        return {"bzImage": str(self.bzimage), "vmlinux": str(self.vmlinux),
                "key": self.key, "source_version": self.source_version,
                "name": self.name, "release": self.release, "arch": self.arch}


# --- private apt --------------------------------------------------------------------------


class PrivateApt:
    """``apt-get`` with its own sources, lists and archives under ``root``."""

    def __init__(self, root: Path, sources: str = APT_SOURCES,
                 arch: Optional[str] = None) -> None:
        self.root = root
        self.sources = sources
        self.arch = arch  # a Debian architecture (arm64) other than the host's

    def _prepare(self) -> None:
        for sub in ("etc", "lists/partial", "archives/partial", "dl"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        src = self.root / "etc" / "sources.list"
        if not src.exists() or src.read_text() != self.sources:
            src.write_text(self.sources)

    def options(self) -> List[str]:
        d = self.root
        opts = {
            "Dir::Etc::SourceList": d / "etc" / "sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::State::Lists": d / "lists",
            "Dir::Cache": d,
            "Dir::Cache::archives": d / "archives",
            "Acquire::Check-Valid-Until": "false",
            "APT::Get::List-Cleanup": "false",
            "APT::Sandbox::User": "root",
        }
        if self.arch:
            opts.update({"APT::Architecture": self.arch, "APT::Architectures": self.arch})
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    def update(self) -> None:
        self._prepare()
        run_checked(["apt-get", *self.options(), "-q", "update"], "update the private apt lists")

    def candidate(self, package: str) -> str:
        """The version ``apt-get download`` would fetch."""
        out = run_checked(["apt-cache", *self.options(), "policy", package],
                          f"look up {package}")
        m = re.search(r"Candidate:\s*(\S+)", out)
        if not m or m.group(1) == "(none)":
            raise LabError(f"{package} is not in {self.sources.strip()}: check the apt source.")
        return m.group(1)

    def download(self, package: str, version: str) -> Path:
        """Download ``package=version`` into ``dl/`` and return the .deb path."""
        self._prepare()
        dl = self.root / "dl"
        run_checked(["apt-get", *self.options(), "-q", "download", f"{package}={version}"],
                    f"download {package}", cwd=dl)
        quoted = version.replace(":", "%3a")
        debs = sorted(dl.glob(f"{package}_{quoted}_*.deb"))
        if not debs:
            raise LabError(f"apt-get download left no {package} .deb in {dl}.")
        return debs[-1]


# --- source -------------------------------------------------------------------------------

def _source_dir(source: Source = SOURCES[PLAIN]) -> Path:
    return cache_root() / "src" / source.package


def _stamp(src: Path) -> Path:
    return src / ".kho-inspect-version"


def source_version(source: Source = SOURCES[PLAIN]) -> Optional[str]:
    """The version of the unpacked source, or ``None`` if none is unpacked."""
    stamp = _stamp(_source_dir(source))
    return stamp.read_text().strip() if stamp.is_file() else None


def ensure_source(update: bool = False, source: Source = SOURCES[PLAIN]) -> Tuple[Path, str]:
    """Return the unpacked source tree and its Debian version, fetching it if missing.

    Without ``update`` an unpacked tree is used as is (no network); with it, the
    candidate version is looked up and a newer one replaces the tree.
    """
    src = _source_dir(source)
    have = source_version(source)
    if have and not update:
        return src, have
    require_tools(("apt-get", "dpkg-deb", "tar", "xz"))
    apt = PrivateApt(cache_root() / source.apt_dir, source.sources)
    apt.update()
    want = apt.candidate(source.package)
    if have == want:
        return src, have
    _unpack(apt.download(source.package, want), src, want, source.package)
    return src, want


def _unpack(deb: Path, src: Path, version: str, package: str = SOURCE_PACKAGE) -> None:
    log.info("unpacking %s", deb.name)
    tmp = src.parent / f".unpack-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run_checked(["dpkg-deb", "-x", deb, tmp / "deb"], f"unpack {deb.name}")
    tarballs = list((tmp / "deb" / "usr" / "src").glob(f"{package}.tar.*"))
    if not tarballs:
        raise LabError(f"{deb.name} holds no usr/src/{package}.tar.*: wrong package?")
    run_checked(["tar", "-xf", tarballs[0], "-C", tmp], f"extract {tarballs[0].name}")
    shutil.rmtree(src, ignore_errors=True)
    (tmp / package).rename(src)
    _stamp(src).write_text(version + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


# --- configuration ------------------------------------------------------------------------

def fragment_path(build: Optional[KernelBuild] = None) -> Path:
    """``vm/<fragment>`` of ``build`` (default: the plain 7.3 kernel's ``vm/lab.config``)."""
    return vm_dir() / (build or KernelBuild()).fragment


def parse_config(text: str) -> Dict[str, str]:
    """The options of a fragment or a full ``.config``: ``{"CONFIG_X": "y" | "n" | value}``
    (``# CONFIG_X is not set`` as ``"n"``)."""
    opts: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = _OPTION.match(line)
        if m:
            opts[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            opts[m.group(1)] = "n"
    return opts


def missing_options(wanted: Dict[str, str], got: Dict[str, str]) -> List[str]:
    """``CONFIG_X (wanted y, got n)`` for every wanted option the config does not have."""
    out = []
    for name, value in wanted.items():
        have = got.get(name, "n")
        if have != value:
            out.append(f"{name} (wanted {value}, got {have})")
    return out


def kernel_key(version: str, fragment: str, patches: Sequence[Tuple[str, bytes]] = (),
               localversion: str = "", package: str = SOURCE_PACKAGE,
               arch: str = DEFAULT_ARCH) -> str:
    """The cache key of a kernel: source package and version, fragment, recipe, the
    architecture and, for a patched kernel, each patch's file name and content and the
    release suffix.

    The plain x86_64 kernel's key is the same as before patched kernels and other
    architectures existed.
    """
    parts: List[Union[str, bytes]] = [package, version, fragment, RECIPE]
    if arch != DEFAULT_ARCH:
        parts += ["arch", arch]
    if patches or localversion:
        parts += ["patches", localversion, *(p for name, data in patches for p in (name, data))]
    return digest(parts)


def configure(src: Path, build: Path, fragment: str, arch: Arch = ARCHES[DEFAULT_ARCH],
              fragment_name: str = "vm/lab.config") -> None:
    """Write ``fragment`` as ``build/.config``, run olddefconfig, check the result.

    :raises LabError: listing every option olddefconfig dropped or changed.
    """
    build.mkdir(parents=True, exist_ok=True)
    (build / ".config").write_text(fragment)
    run_checked(["make", "-C", src, f"O={build}", *arch.make_variables(), "olddefconfig"],
                "configure the lab kernel", log=build / "olddefconfig.log")
    missing = missing_options(parse_config(fragment),
                              parse_config((build / ".config").read_text()))
    if missing:
        raise LabError(
            f"make olddefconfig dropped options of {fragment_name} (fix their dependencies): "
            + ", ".join(missing) + "."
        )


# --- patches ------------------------------------------------------------------------------

def patch_files(build: KernelBuild) -> List[Path]:
    """The patch series of ``build`` in order (``vm/patches/<name>/*.patch``); none for
    the plain kernel.

    :raises LabError: when a patched kernel's series is missing.
    """
    if not build.patched:
        return []
    directory = vm_dir() / "patches" / build.name
    files = sorted(directory.glob("*.patch"))
    if not files:
        raise LabError(f"{directory} holds no *.patch file: the {build.name} kernel cannot be "
                       "built (reinstall kho-inspect from a wheel or a checkout).")
    return files


def patched_paths(patch: str) -> List[str]:
    """The files a ``git format-patch`` / ``diff -u`` patch changes, relative to the tree
    it applies to with ``patch -p1``.

    >>> patched_paths("--- a/mm/memblock.c\\n+++ b/mm/memblock.c\\n@@ -1 +1 @@\\n")
    ['mm/memblock.c']
    """
    return sorted(set(_PATCHED_FILE.findall(patch)))


def _apply_patches(plain: Path, tree: Path, patches: Sequence[Path]) -> None:
    """Apply ``patches`` to ``tree``, a hard-link copy of ``plain``, and check that every
    changed file is a file of its own (``patch`` replaces files; it must never write
    through a link into the plain source).

    :raises LabError: when a patch does not apply or a changed file is still linked.
    """
    for path in patches:
        run_checked(["patch", "-p1", "--batch", "--forward", "--fuzz=0",
                     "--no-backup-if-mismatch", "-d", tree, "-i", path],
                    f"apply {path.name} to {tree.name}")
        for rel in patched_paths(path.read_text(errors="replace")):
            before, after = plain / rel, tree / rel
            if before.exists() and after.exists() and before.samefile(after):
                raise LabError(f"patch changed {rel} through its hard link: the plain source "
                               f"{plain} is modified now; delete {plain} and build again.")


# --- build --------------------------------------------------------------------------------

def _kernel_root() -> Path:
    return cache_root() / "kernel"


def cached_kernel(key: str) -> Optional[Kernel]:
    """The cached kernel for ``key``, if it is complete."""
    d = _kernel_root() / key
    info = d / "build.json"
    if not info.is_file() or not all((d / name).is_file() for name in ARTIFACTS):
        return None
    meta = json.loads(info.read_text())
    arch = ARCHES.get(meta.get("arch", DEFAULT_ARCH))
    if arch is None or not (d / arch.image).is_file():
        return None
    return Kernel(d / arch.image, d / "vmlinux", key, meta.get("source_version"),
                  meta.get("name", PLAIN), meta.get("release"), arch.name)


def build_key(build: KernelBuild, version: str, fragment: str,
              patches: Sequence[Path] = ()) -> str:
    """:func:`kernel_key` of ``build`` from source ``version``."""
    return kernel_key(version, fragment, [(p.name, p.read_bytes()) for p in patches],
                      build.localversion, build.source.package, build.arch)


@holding_cache_lock("a lab kernel")
def ensure_kernel(name: str = PLAIN, update_source: bool = False, jobs: Optional[int] = None,
                  force: bool = False, arch: Optional[str] = None) -> Kernel:
    """The lab kernel ``name`` (:data:`LAB_KERNELS`; see :func:`lab_kernel` for
    ``arch``) for the current fragment and patches, built (and the source fetched) if
    missing.

    :raises LabError: for an unknown name, a missing tool, a failed build.
    """
    build = lab_kernel(name, arch).build
    fragment = fragment_path(build).read_text()
    patches = patch_files(build)
    src, version = ensure_source(update_source, build.source)
    key = build_key(build, version, fragment, patches)
    kernel = None if force else cached_kernel(key)
    if kernel is not None:
        return kernel
    require_tools(BUILD_TOOLS + build.target.tools() + (PATCH_TOOLS if patches else ()))
    jobs = jobs or (os.cpu_count() or 1) + 1
    _drop_old_tree()
    if not patches:
        return _build_plain(build, src, version, fragment, key, jobs)
    return _build_patched(build, patches, src, version, fragment, key, jobs)


def _tree_key(tree: Path) -> Optional[str]:
    """The key of the last complete build in ``tree`` (``None``: none completed)."""
    stamp = tree / TREE_KEY
    if not stamp.is_file() or not (tree / "vmlinux").is_file():
        return None
    return stamp.read_text().strip()


def _build_plain(build: KernelBuild, src: Path, version: str, fragment: str, key: str,
                 jobs: int) -> Kernel:
    tree = src / build.target.build_dir
    (tree / TREE_KEY).unlink(missing_ok=True)
    log.info("configuring %s %s for %s (key %s) in %s", build.source.package, version,
             build.arch, key, tree)
    configure(src, tree, fragment, build.target, f"vm/{build.fragment}")
    seconds, steps = _make(src, tree, jobs, _expected_steps(False, build.arch),
                           build.target)
    (tree / TREE_KEY).write_text(key + "\n")
    return _store(build, tree, key, version, seconds, steps,
                  {"name": build.name, "incremental": False})


def _drop_old_tree() -> None:
    """Remove ``kernel/build/``, where the plain kernel was built before it moved into its
    source (its absolute paths make it useless for incremental builds)."""
    old = _kernel_root() / "build"
    if old.is_dir():
        log.info("removing the old build tree %s (the plain kernel builds in %s/ now)", old,
                 BUILD_DIR)
        shutil.rmtree(old, ignore_errors=True)


def _build_patched(build: KernelBuild, patches: Sequence[Path], src: Path, version: str,
                   fragment: str, key: str, jobs: int) -> Kernel:
    """Build ``build``: link the plain source, copy the plain build tree when it is
    complete, apply the patches, and make (only the patched files' dependents rebuild)."""
    plain_tree = src / build.target.build_dir
    base_key = build_key(build.plain, version, fragment)
    incremental = _tree_key(plain_tree) == base_key
    arch_suffix = "" if build.arch == DEFAULT_ARCH else f"-{build.arch}"
    source = src.with_name(build.source.package + build.suffix + arch_suffix)
    tree = source / build.target.build_dir
    log.info("linking %s into %s", src, source)
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    run_checked(["cp", "-al", *sorted(e for e in src.iterdir()
                                      if not e.name.startswith(BUILD_DIR)), source],
                f"link the source into {source}")
    if incremental:
        log.info("copying the %s build tree %s (incremental build)", build.plain.name,
                 plain_tree)
        run_checked(["cp", "-a", plain_tree, tree], f"copy {plain_tree}")
        (tree / TREE_KEY).unlink()
    else:
        log.warning("no complete %s build tree in %s: building %s from scratch (a full "
                    "build; build %s first and %s builds incrementally)", build.plain.name,
                    plain_tree, build.name, build.plain.name, build.name)
    _apply_patches(src, source, patches)
    log.info("applied %d patches of %s (key %s)", len(patches), build.name, key)
    if not incremental:
        configure(source, tree, fragment, build.target, f"vm/{build.fragment}")
    started = time.time()
    seconds, steps = _make(source, tree, jobs, _expected_steps(incremental, build.arch),
                           build.target,
                           [f"LOCALVERSION={build.localversion}"])
    _check_untouched(src, started)
    (tree / TREE_KEY).write_text(key + "\n")
    meta = {"name": build.name, "incremental": incremental, "localversion": build.localversion,
            "base_key": base_key if incremental else None,
            "patches": [{"file": p.name, "sha256": digest([p.read_bytes()], 64)}
                        for p in patches]}
    return _store(build, tree, key, version, seconds, steps, meta)


def _check_untouched(src: Path, since: float) -> None:
    """:raises LabError: when a file of the plain source changed after ``since`` (a build
    that wrote through a hard link)."""
    changed = []
    for root, dirs, files in os.walk(src):
        if root == str(src):
            dirs[:] = [d for d in dirs if not d.startswith(BUILD_DIR)]
        changed += [os.path.join(root, f) for f in files
                    if os.lstat(os.path.join(root, f)).st_mtime > since]
    if changed:
        raise LabError(f"The patched build changed {len(changed)} file(s) of the plain source "
                       f"through hard links ({', '.join(changed[:3])}): delete {src} and build "
                       "again.")


def _expected_steps(incremental: bool, arch: str = DEFAULT_ARCH) -> int:
    counts = []
    for info in _kernel_root().glob("*/build.json"):
        try:
            meta = json.loads(info.read_text())
            if bool(meta.get("incremental")) == incremental \
                    and meta.get("arch", DEFAULT_ARCH) == arch:
                counts.append(int(meta.get("build_steps", 0)))
        except (ValueError, OSError):
            continue
    best = max(counts, default=0)
    if incremental:
        return best or DEFAULT_INCREMENTAL_STEPS
    return best if best > 100 else DEFAULT_BUILD_STEPS


def _make(src: Path, build: Path, jobs: int, expected: int, arch: Arch = ARCHES[DEFAULT_ARCH],
          variables: Sequence[str] = ()) -> Tuple[float, int]:
    argv = ["make", "-C", str(src), f"O={build}", f"-j{jobs}", *arch.make_variables(),
            f"KCFLAGS={KCFLAGS}", *variables, arch.image, "vmlinux"]
    log_path = build / "build.log"
    log.info("building %s and vmlinux with -j%d (log: %s)", arch.image, jobs, log_path)
    progress = _Progress(expected)
    start = time.monotonic()
    with open(log_path, "w") as build_log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            build_log.write(line)
            progress.line(line)
        rc = proc.wait()
    progress.done()
    if rc != 0:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-4:])
        raise LabError(f"The kernel build failed (make exited {rc}, log: {log_path}): {tail}")
    return time.monotonic() - start, progress.steps


def _store(kbuild: KernelBuild, build: Path, key: str, version: str, seconds: float,
           steps: int, extra: Dict[str, object]) -> Kernel:
    dest = _kernel_root() / key
    tmp = dest.with_name(f".{key}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arch = kbuild.target
    for name, rel in {arch.image: arch.image_path, **ARTIFACTS}.items():
        shutil.copy2(build / rel, tmp / name)
    release = (build / "include" / "config" / "kernel.release").read_text().strip()
    meta = {"key": key, "source_package": kbuild.source.package, "source_version": version,
            "release": release, "build_seconds": round(seconds, 1), "build_steps": steps,
            "fragment": str(fragment_path(kbuild)), "arch": arch.name, **extra}
    (tmp / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    _link_debug_info(dest / "vmlinux", release)
    log.info("kernel %s cached in %s (%.0f s)", release, dest, seconds)
    return Kernel(dest / arch.image, dest / "vmlinux", key, version, str(extra["name"]), release,
                  arch.name)


def _link_debug_info(vmlinux: Path, release: str) -> None:
    """Point ``vmlinux/<release>/vmlinux`` (a place kho-inspect searches) at the lab's."""
    link = cache_root() / "vmlinux" / release / "vmlinux"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(vmlinux)


def kernel_from_dir(path: Path, arch: str = DEFAULT_ARCH) -> Kernel:
    """A kernel for ``arch`` from a build tree (``arch/x86/boot/bzImage``,
    ``arch/arm64/boot/Image``) or a flat directory (``bzImage``, ``Image``).

    :raises LabError: when the boot image or ``vmlinux`` is missing.
    """
    target = ARCHES[arch]
    candidates = [path / target.image_path, path / target.image]
    image = next((p for p in candidates if p.is_file()), None)
    vmlinux = path / "vmlinux"
    if image is None or not vmlinux.is_file():
        raise LabError(
            f"{path} is not an {arch} kernel build tree: it needs {target.image_path} (or "
            f"{target.image}) and vmlinux; build the kernel first or drop --kernel-dir."
        )
    return Kernel(image.resolve(), vmlinux.resolve(), arch=arch)


class _Progress:
    """Progress records: steps done, estimate, elapsed, the current step."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.steps = 0
        self.start = time.monotonic()
        self.last_info = 0.0
        self.last_tick = 0.0

    def line(self, line: str) -> None:
        m = _STEP.match(line)
        if not m:
            return
        self.steps += 1
        now = time.monotonic()
        if now - self.last_info >= PROGRESS_EVERY:
            level, self.last_info = logging.INFO, now
        elif now - self.last_tick >= PROGRESS_TICK and progress_log.isEnabledFor(logging.DEBUG):
            level = logging.DEBUG
        else:
            return
        self.last_tick = now
        pct = min(99, 100 * self.steps // max(self.expected, 1))
        progress_log.log(level, "kernel build %3d%% %d/~%d %s  %s %s", pct, self.steps,
                         self.expected, _mmss(now - self.start), m.group(1), m.group(2))

    def done(self) -> None:
        log.info("kernel build finished in %s (%d steps)", _mmss(time.monotonic() - self.start),
                 self.steps)


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def iter_kernels() -> Iterator[Kernel]:
    """Every complete kernel in the cache."""
    root = _kernel_root()
    if not root.is_dir():
        return
    for d in sorted(root.iterdir()):
        k = cached_kernel(d.name) if d.name != "build" else None
        if k is not None:
            yield k

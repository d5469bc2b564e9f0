# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Guest root filesystem
---------------------

A Debian sid directory tree built with ``mmdebstrap`` from the package list in
``vm/rootfs.packages``, shared read-only into the guest as its 9p root. It
holds one file of its own, ``/sbin/kho-lab-init``: it mounts the lab's guest
side (:func:`~kho_inspect.lab.vm_dir`: ``vm/`` of a checkout, ``kho_inspect/_vm``
of an installed wheel) at ``/lab/vm`` and executes ``guest/init`` from there,
so the guest side lives with the package that runs the lab and changing it
needs no rebuild. The tree holds the mount points of the other shares:
``/lab/py/kho_inspect`` (the host's kho_inspect package), ``/lab/kernel`` and
``/lab/out``.

Cached as ``rootfs/<key>/`` where ``<key>`` hashes the package list and this
recipe (suite, mirror, options, bootstrap script).
"""

import json
import logging
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from kho_inspect.errors import LabError
from kho_inspect.lab import (
    cache_root,
    digest,
    holding_cache_lock,
    require_tools,
    run_checked,
    vm_dir,
)
from kho_inspect.lab.kernel import ARCHES, PrivateApt

__all__ = ("Rootfs", "SUITE", "MIRROR", "read_packages", "rootfs_key", "ensure_rootfs",
           "BOOTSTRAP_PATH", "VM_TAG", "ensure_initramfs", "ensure_guest_root",
           "INITRAMFS_NAME")

SUITE = "sid"
MIRROR = "http://deb.debian.org/debian"
BOOTSTRAP_PATH = "/sbin/kho-lab-init"
# Mount points of the 9p shares, created in the tree (the guest's root is read-only).
SHARE_DIRS = ("lab/vm", "lab/py/kho_inspect", "lab/kernel", "lab/out")
VM_TAG = "khovm"  # the 9p tag of the guest side the bootstrap mounts
BOOTSTRAP = f"""#!/bin/sh
# kho-inspect lab bootstrap (PID 1): mount the lab's guest side (vm/ of a checkout or
# kho_inspect/_vm of an installed wheel) and run its guest/init, which does the rest.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 {VM_TAG} /lab/vm || {{
    echo "KHO-LAB: cannot mount the lab share {VM_TAG}" > /dev/console
    exec /bin/sh
}}
exec /bin/sh /lab/vm/guest/init "$@"
"""
MMDEBSTRAP_OPTIONS = (
    "--variant=apt",
    "--aptopt=Acquire::Check-Valid-Until \"false\"",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
)
# Used only when the host's keyring cannot verify sid: trixie's keyring package is
# signed with keys that bookworm's debian-archive-keyring already has.
KEYRING_SOURCES = f"deb {MIRROR} trixie main\n"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rootfs:
    """A built guest root: the directory shared as ``/`` and its cache key."""

    path: Path
    key: str


def packages_path() -> Path:
    return vm_dir() / "rootfs.packages"


def read_packages(text: str) -> List[str]:
    """Package names of a list file: one per line, ``#`` comments, blank lines ignored."""
    names = []
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def rootfs_key(packages: List[str]) -> str:
    return digest([SUITE, MIRROR, " ".join(sorted(packages)), BOOTSTRAP,
                   " ".join(SHARE_DIRS), *MMDEBSTRAP_OPTIONS])


def _root() -> Path:
    return cache_root() / "rootfs"


def cached_rootfs(key: str) -> Optional[Rootfs]:
    d = _root() / key
    if (d / "rootfs.json").is_file() and (d / "tree" / BOOTSTRAP_PATH.lstrip("/")).is_file():
        return Rootfs(d / "tree", key)
    return None


@holding_cache_lock("the guest root filesystem")
def ensure_rootfs(force: bool = False) -> Rootfs:
    """The guest root filesystem for the current package list, built if missing."""
    packages = read_packages(packages_path().read_text())
    key = rootfs_key(packages)
    found = None if force else cached_rootfs(key)
    if found is not None:
        return found
    require_tools(("mmdebstrap",))
    return _build(packages, key)


def _hook_commands() -> List[str]:
    mkdirs = " ".join(f'"$1/{d}"' for d in SHARE_DIRS)
    script = BOOTSTRAP.replace("'", "'\\''")
    return [
        f"--customize-hook=mkdir -p {mkdirs}",
        f"--customize-hook=printf '%s' '{script}' > \"$1{BOOTSTRAP_PATH}\"",
        f"--customize-hook=chmod 755 \"$1{BOOTSTRAP_PATH}\"",
    ]


def _mmdebstrap(packages: List[str], tree: Path, log_path: Path,
                keyring: Optional[Path] = None) -> None:
    argv: List[str] = ["mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--include={','.join(packages)}",
                       *_hook_commands()]
    if keyring is not None:
        argv.append(f"--keyring={keyring}")
    argv += [SUITE, str(tree), MIRROR]
    run_checked(argv, "build the guest root filesystem with mmdebstrap", log=log_path)


def _build(packages: List[str], key: str) -> Rootfs:
    dest = _root() / key
    tmp = _root() / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mmdebstrap_log = _root() / f"{key}.log"
    log.info("building the Debian %s guest root filesystem (key %s, log: %s)", SUITE, key,
             mmdebstrap_log)
    start = time.monotonic()
    try:
        _mmdebstrap(packages, tmp / "tree", mmdebstrap_log)
    except LabError:
        if not _signature_problem(mmdebstrap_log):
            raise
        log.info("the host keyring cannot verify sid; retrying with trixie's")
        shutil.rmtree(tmp / "tree", ignore_errors=True)
        _mmdebstrap(packages, tmp / "tree", mmdebstrap_log, keyring=_newer_keyring())
    seconds = time.monotonic() - start
    meta = {"key": key, "suite": SUITE, "mirror": MIRROR, "packages": packages,
            "build_seconds": round(seconds, 1)}
    (tmp / "rootfs.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.copy2(mmdebstrap_log, dest / "mmdebstrap.log")
    mmdebstrap_log.unlink()
    log.info("guest root filesystem cached in %s (%.0f s)", dest, seconds)
    _prune(key)
    return Rootfs(dest / "tree", key)


def _prune(keep: str) -> None:
    """Remove root filesystems of older package lists (each is ~400 MB)."""
    for d in _root().iterdir():
        if d.is_dir() and d.name != keep and not d.name.startswith("."):
            shutil.rmtree(d, ignore_errors=True)


def _signature_problem(log_path: Path) -> bool:
    text = log_path.read_text(errors="replace")
    return any(s in text for s in ("NO_PUBKEY", "is not signed", "EXPKEYSIG", "GPG error"))


def _newer_keyring() -> Path:
    """debian-archive-keyring from trixie, unpacked; returns its keyring file."""
    apt = PrivateApt(cache_root() / "apt-keyring", KEYRING_SOURCES)
    apt.update()
    version = apt.candidate("debian-archive-keyring")
    deb = apt.download("debian-archive-keyring", version)
    out = cache_root() / "keyring" / version
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run_checked(["dpkg-deb", "-x", deb, out], "unpack debian-archive-keyring")
    for name in ("debian-archive-keyring.pgp", "debian-archive-keyring.gpg"):
        found = sorted(out.rglob(name))
        if found:
            return found[0]
    raise LabError(f"debian-archive-keyring {version} holds no keyring: cannot verify sid.")


# --- initramfs (architectures without a root filesystem of their own) ------------------------

# The initramfs bootstrap (/init): mount the lab's guest side like BOOTSTRAP does and
# run its guest/init-initramfs (busybox sh), which does the stage.
INITRAMFS_BOOTSTRAP = f"""#!/bin/busybox sh
# kho-inspect lab initramfs bootstrap (PID 1): busybox applets, the lab's guest side
# (vm/ of a checkout or kho_inspect/_vm of an installed wheel), then its
# guest/init-initramfs, which does the rest.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 {VM_TAG} /lab/vm || {{
    echo "KHO-LAB: cannot mount the lab share {VM_TAG}" > /dev/console
    exec /bin/sh
}}
exec /bin/sh /lab/vm/guest/init-initramfs "$@"
"""
INITRAMFS_DIRS = ("bin", "proc", "sys", "dev", "tmp", "run", "lab/vm", "lab/kernel",
                  "lab/initrd", "lab/out")
INITRAMFS_NAME = "initramfs.cpio"
HELPER_SOURCE = "guest/khoguest.c"  # under vm/: the guest's LUO and kexec helper
# Debian's name and the cross compiler's prefix (the kernel's) of each initramfs architecture.
INITRAMFS_ARCHES = {"arm64": ("arm64", ARCHES["arm64"].cross_compile)}
INITRAMFS_SOURCES = f"deb {MIRROR} {SUITE} main\n"


def initramfs_key(arch: str, busybox_version: str, helper: bytes) -> str:
    return digest(["initramfs", arch, busybox_version, helper, INITRAMFS_BOOTSTRAP,
                   " ".join(INITRAMFS_DIRS)])


@holding_cache_lock("an initramfs")
def ensure_initramfs(arch: str, force: bool = False) -> Rootfs:
    """The lab's initramfs for ``arch`` (``path`` is the cpio archive), built if missing:
    busybox-static of Debian ``sid`` for ``arch`` (downloaded through a private apt
    configuration and unpacked with ``dpkg-deb -x``), ``vm/guest/khoguest.c`` compiled
    static with the cross compiler, and :data:`INITRAMFS_BOOTSTRAP` as ``/init``.

    :raises LabError: for an architecture without an initramfs, a missing tool, a failed
        download or compile.
    """
    if arch not in INITRAMFS_ARCHES:
        raise LabError(f"The lab has no initramfs for {arch}: its guest is the 9p root "
                       "filesystem.")
    debian_arch, cross = INITRAMFS_ARCHES[arch]
    require_tools((f"{cross}gcc", "cpio", "apt-get", "dpkg-deb"))
    helper = (vm_dir() / HELPER_SOURCE).read_bytes()
    apt = PrivateApt(cache_root() / f"apt-{debian_arch}", INITRAMFS_SOURCES, debian_arch)
    existing = sorted((cache_root() / "initramfs").glob(f"{arch}-*/{INITRAMFS_NAME}"))
    if existing and not force:  # offline when one is cached for the current helper
        for path in existing:
            meta = json.loads((path.parent / "initramfs.json").read_text())
            if meta.get("key") == initramfs_key(arch, meta.get("busybox", ""), helper):
                return Rootfs(path, meta["key"])
    apt.update()
    version = apt.candidate("busybox-static")
    key = initramfs_key(arch, version, helper)
    dest = cache_root() / "initramfs" / f"{arch}-{key}"
    if (dest / INITRAMFS_NAME).is_file() and not force:
        return Rootfs(dest / INITRAMFS_NAME, key)
    return _build_initramfs(arch, cross, apt.download("busybox-static", version), version,
                            key, dest)


def _build_initramfs(arch: str, cross: str, busybox_deb: Path, version: str, key: str,
                     dest: Path) -> Rootfs:
    start = time.monotonic()
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tree = tmp / "tree"
    for d in INITRAMFS_DIRS:
        (tree / d).mkdir(parents=True, exist_ok=True)
    run_checked(["dpkg-deb", "-x", busybox_deb, tmp / "deb"], f"unpack {busybox_deb.name}")
    found = [p for p in (tmp / "deb" / "usr" / "bin" / "busybox", tmp / "deb" / "bin" / "busybox")
             if p.is_file()]
    if not found:
        raise LabError(f"{busybox_deb.name} holds no busybox binary: wrong package?")
    shutil.copy2(found[0], tree / "bin" / "busybox")
    run_checked([f"{cross}gcc", "-static", "-O2", "-Wall", "-o", tree / "bin" / "khoguest",
                 vm_dir() / HELPER_SOURCE], f"compile {HELPER_SOURCE} for {arch}")
    (tree / "init").write_text(INITRAMFS_BOOTSTRAP)
    (tree / "init").chmod(0o755)
    os.mknod(tree / "dev" / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    with open(tmp / INITRAMFS_NAME, "wb") as archive:
        proc = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree,
                              input="\n".join(names).encode(), stdout=archive,
                              stderr=subprocess.PIPE)
    if proc.returncode:
        raise LabError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
    meta = {"key": key, "arch": arch, "busybox": version,
            "build_seconds": round(time.monotonic() - start, 1)}
    (tmp / "initramfs.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(tmp / "tree")
    shutil.rmtree(tmp / "deb")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info("%s initramfs cached in %s", arch, dest)
    return Rootfs(dest / INITRAMFS_NAME, key)


def ensure_guest_root(arch: str = "x86_64", force: bool = False) -> Rootfs:
    """What the guest of ``arch`` boots into: the 9p root filesystem (x86_64) or the
    initramfs (arm64)."""
    if arch in INITRAMFS_ARCHES:
        return ensure_initramfs(arch, force)
    return ensure_rootfs(force)

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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from kho_inspect.errors import LabError
from kho_inspect.lab import cache_root, digest, require_tools, run_checked, vm_dir
from kho_inspect.lab.kernel import PrivateApt

__all__ = ("Rootfs", "SUITE", "MIRROR", "read_packages", "rootfs_key", "ensure_rootfs",
           "BOOTSTRAP_PATH", "VM_TAG")

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

"""
Guest root filesystem
---------------------

A Debian sid directory tree built with ``mmdebstrap`` from the package list in
``vm/rootfs.packages``, shared read-only into the guest as its 9p root. It
holds one file of its own, ``/sbin/kho-lab-init``: it mounts the project source
share at ``/lab/src`` and executes ``vm/guest/init`` from there, so the guest
side of the lab lives in the repository and changing it needs no rebuild.

Cached as ``rootfs/<key>/`` where ``<key>`` hashes the package list and this
recipe (suite, mirror, options, bootstrap script).
"""

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import click

from kho_inspect.errors import LabError
from kho_inspect.lab import cache_root, digest, require_tools, run_checked, vm_dir
from kho_inspect.lab.kernel import PrivateApt

__all__ = ("Rootfs", "SUITE", "MIRROR", "read_packages", "rootfs_key", "ensure_rootfs",
           "BOOTSTRAP_PATH")

SUITE = "sid"
MIRROR = "http://deb.debian.org/debian"
BOOTSTRAP_PATH = "/sbin/kho-lab-init"
# Mount points of the 9p shares, created in the tree (the guest's root is read-only).
SHARE_DIRS = ("lab/src", "lab/kernel", "lab/out")
BOOTSTRAP = """#!/bin/sh
# kho-inspect lab bootstrap (PID 1): mount the project source share and run its
# vm/guest/init, which does everything else.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 khosrc /lab/src || {
    echo "KHO-LAB: cannot mount the source share khosrc" > /dev/console
    exec /bin/sh
}
exec /lab/src/vm/guest/init "$@"
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


def _mmdebstrap(packages: List[str], tree: Path, log: Path,
                keyring: Optional[Path] = None) -> None:
    argv: List[str] = ["mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--include={','.join(packages)}",
                       *_hook_commands()]
    if keyring is not None:
        argv.append(f"--keyring={keyring}")
    argv += [SUITE, str(tree), MIRROR]
    run_checked(argv, "build the guest root filesystem with mmdebstrap", log=log)


def _build(packages: List[str], key: str) -> Rootfs:
    dest = _root() / key
    tmp = _root() / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log = _root() / f"{key}.log"
    click.echo(f"lab: building the Debian {SUITE} guest root filesystem (key {key}, "
               f"log: {log})", err=True)
    start = time.monotonic()
    try:
        _mmdebstrap(packages, tmp / "tree", log)
    except LabError:
        if not _signature_problem(log):
            raise
        click.echo("lab: the host keyring cannot verify sid; retrying with trixie's", err=True)
        shutil.rmtree(tmp / "tree", ignore_errors=True)
        _mmdebstrap(packages, tmp / "tree", log, keyring=_newer_keyring())
    seconds = time.monotonic() - start
    meta = {"key": key, "suite": SUITE, "mirror": MIRROR, "packages": packages,
            "build_seconds": round(seconds, 1)}
    (tmp / "rootfs.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.copy2(log, dest / "mmdebstrap.log")
    log.unlink()
    click.echo(f"lab: guest root filesystem cached in {dest} ({seconds:.0f} s)", err=True)
    _prune(key)
    return Rootfs(dest / "tree", key)


def _prune(keep: str) -> None:
    """Remove root filesystems of older package lists (each is ~400 MB)."""
    for d in _root().iterdir():
        if d.is_dir() and d.name != keep and not d.name.startswith("."):
            shutil.rmtree(d, ignore_errors=True)


def _signature_problem(log: Path) -> bool:
    text = log.read_text(errors="replace")
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

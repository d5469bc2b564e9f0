"""
Lab kernel
----------

Fetch Debian's ``linux-source-7.3`` with a private apt configuration (no
system-wide install, nothing under ``/etc/apt`` touched), configure it from
``vm/lab.config`` the way ``tools/testing/selftests/kho/vmtest.sh`` does (the
fragment as the whole ``.config``, then ``make olddefconfig``), check that
every option of the fragment survived, build ``bzImage`` and ``vmlinux`` with a
progress display, and cache the results.

Cache layout (under :func:`~kho_inspect.lab.cache_root`)::

    apt/                          private apt state (lists, downloaded .debs)
    src/linux-source-7.3/         unpacked source, version in .kho-inspect-version
    kernel/build/                 the O= build tree, reused for incremental builds
    kernel/<key>/                 bzImage, vmlinux, config, System.map, build.json

``<key>`` hashes the source package version and the fragment's content.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import click

from kho_inspect.errors import LabError
from kho_inspect.lab import cache_root, digest, require_tools, run_checked, vm_dir

__all__ = (
    "SOURCE_PACKAGE",
    "APT_SOURCES",
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
# Bump when the recipe (targets, make variables) changes in a way that changes the output.
RECIPE = "fragment>.config; make olddefconfig; make bzImage vmlinux; v1"
BUILD_TOOLS = ("make", "gcc", "flex", "bison", "bc", "pahole", "apt-get", "dpkg-deb", "tar", "xz")
ARTIFACTS = {"bzImage": "arch/x86/boot/bzImage", "vmlinux": "vmlinux",
             "config": ".config", "System.map": "System.map"}
# kbuild lines ("  CC      mm/memblock.o") of a cold build of the lab config; refined by
# the last build's own count, which build.json records.
DEFAULT_BUILD_STEPS = 2471
_STEP = re.compile(r"^\s{2}([A-Z][A-Z0-9_\-]*)\s+(\S+)")
_OPTION = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Kernel:
    """A kernel the lab can boot: ``bzImage`` and the ``vmlinux`` built with it."""

    bzimage: Path
    vmlinux: Path
    key: Optional[str] = None
    source_version: Optional[str] = None

    def to_json(self) -> Dict[str, Optional[str]]:
        return {"bzImage": str(self.bzimage), "vmlinux": str(self.vmlinux),
                "key": self.key, "source_version": self.source_version}


# --- private apt --------------------------------------------------------------------------


class PrivateApt:
    """``apt-get`` with its own sources, lists and archives under ``root``."""

    def __init__(self, root: Path, sources: str = APT_SOURCES) -> None:
        self.root = root
        self.sources = sources

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

def _source_dir() -> Path:
    return cache_root() / "src" / SOURCE_PACKAGE


def _stamp(src: Path) -> Path:
    return src / ".kho-inspect-version"


def source_version() -> Optional[str]:
    """The version of the unpacked source, or ``None`` if none is unpacked."""
    stamp = _stamp(_source_dir())
    return stamp.read_text().strip() if stamp.is_file() else None


def ensure_source(update: bool = False) -> Tuple[Path, str]:
    """Return the unpacked source tree and its Debian version, fetching it if missing.

    Without ``update`` an unpacked tree is used as is (no network); with it, the
    candidate version is looked up and a newer one replaces the tree.
    """
    src = _source_dir()
    have = source_version()
    if have and not update:
        return src, have
    require_tools(("apt-get", "dpkg-deb", "tar", "xz"))
    apt = PrivateApt(cache_root() / "apt")
    apt.update()
    want = apt.candidate(SOURCE_PACKAGE)
    if have == want:
        return src, have
    _unpack(apt.download(SOURCE_PACKAGE, want), src, want)
    return src, want


def _unpack(deb: Path, src: Path, version: str) -> None:
    click.echo(f"lab: unpacking {deb.name}", err=True)
    tmp = src.parent / f".unpack-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run_checked(["dpkg-deb", "-x", deb, tmp / "deb"], f"unpack {deb.name}")
    tarballs = list((tmp / "deb" / "usr" / "src").glob(f"{SOURCE_PACKAGE}.tar.*"))
    if not tarballs:
        raise LabError(f"{deb.name} holds no usr/src/{SOURCE_PACKAGE}.tar.*: wrong package?")
    run_checked(["tar", "-xf", tarballs[0], "-C", tmp], f"extract {tarballs[0].name}")
    shutil.rmtree(src, ignore_errors=True)
    (tmp / SOURCE_PACKAGE).rename(src)
    _stamp(src).write_text(version + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


# --- configuration ------------------------------------------------------------------------

def fragment_path() -> Path:
    return vm_dir() / "lab.config"


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


def kernel_key(version: str, fragment: str) -> str:
    """The cache key of a kernel: source package version, fragment, recipe."""
    return digest([SOURCE_PACKAGE, version, fragment, RECIPE])


def configure(src: Path, build: Path, fragment: str) -> None:
    """Write ``fragment`` as ``build/.config``, run olddefconfig, check the result.

    :raises LabError: listing every option olddefconfig dropped or changed.
    """
    build.mkdir(parents=True, exist_ok=True)
    (build / ".config").write_text(fragment)
    run_checked(["make", "-C", src, f"O={build}", "olddefconfig"], "configure the lab kernel",
                log=build / "olddefconfig.log")
    missing = missing_options(parse_config(fragment),
                              parse_config((build / ".config").read_text()))
    if missing:
        raise LabError(
            "make olddefconfig dropped options of vm/lab.config (fix their dependencies): "
            + ", ".join(missing) + "."
        )


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
    return Kernel(d / "bzImage", d / "vmlinux", key, meta.get("source_version"))


def ensure_kernel(update_source: bool = False, jobs: Optional[int] = None,
                  force: bool = False) -> Kernel:
    """The lab kernel for the current fragment, built (and the source fetched) if missing."""
    fragment = fragment_path().read_text()
    src, version = ensure_source(update_source)
    key = kernel_key(version, fragment)
    kernel = None if force else cached_kernel(key)
    if kernel is not None:
        return kernel
    require_tools(BUILD_TOOLS)
    build = _kernel_root() / "build"
    click.echo(f"lab: configuring {SOURCE_PACKAGE} {version} (key {key})", err=True)
    configure(src, build, fragment)
    seconds, steps = _make(src, build, jobs or (os.cpu_count() or 1) + 1)
    return _store(build, key, version, seconds, steps)


def _expected_steps() -> int:
    counts = []
    for info in _kernel_root().glob("*/build.json"):
        try:
            counts.append(int(json.loads(info.read_text()).get("build_steps", 0)))
        except (ValueError, OSError):
            continue
    best = max(counts, default=0)
    return best if best > 100 else DEFAULT_BUILD_STEPS


def _make(src: Path, build: Path, jobs: int) -> Tuple[float, int]:
    argv = ["make", "-C", str(src), f"O={build}", f"-j{jobs}", "bzImage", "vmlinux"]
    log_path = build / "build.log"
    click.echo(f"lab: building bzImage and vmlinux with -j{jobs} (log: {log_path})", err=True)
    progress = _Progress(_expected_steps())
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            progress.line(line)
        rc = proc.wait()
    progress.done()
    if rc != 0:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-4:])
        raise LabError(f"The kernel build failed (make exited {rc}, log: {log_path}): {tail}")
    return time.monotonic() - start, progress.steps


def _store(build: Path, key: str, version: str, seconds: float, steps: int) -> Kernel:
    dest = _kernel_root() / key
    tmp = dest.with_name(f".{key}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, rel in ARTIFACTS.items():
        shutil.copy2(build / rel, tmp / name)
    release = (build / "include" / "config" / "kernel.release").read_text().strip()
    meta = {"key": key, "source_package": SOURCE_PACKAGE, "source_version": version,
            "release": release, "build_seconds": round(seconds, 1), "build_steps": steps,
            "fragment": str(fragment_path())}
    (tmp / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    _link_debug_info(dest / "vmlinux", release)
    click.echo(f"lab: kernel {release} cached in {dest} ({seconds:.0f} s)", err=True)
    return Kernel(dest / "bzImage", dest / "vmlinux", key, version)


def _link_debug_info(vmlinux: Path, release: str) -> None:
    """Point ``vmlinux/<release>/vmlinux`` (a place kho-inspect searches) at the lab's."""
    link = cache_root() / "vmlinux" / release / "vmlinux"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(vmlinux)


def kernel_from_dir(path: Path) -> Kernel:
    """A kernel from a build tree (``arch/x86/boot/bzImage``) or a flat directory.

    :raises LabError: when ``bzImage`` or ``vmlinux`` is missing.
    """
    candidates = [path / "arch" / "x86" / "boot" / "bzImage", path / "bzImage"]
    bzimage = next((p for p in candidates if p.is_file()), None)
    vmlinux = path / "vmlinux"
    if bzimage is None or not vmlinux.is_file():
        raise LabError(
            f"{path} is not a kernel build tree: it needs arch/x86/boot/bzImage (or bzImage) "
            "and vmlinux; build the kernel first or drop --kernel-dir."
        )
    return Kernel(bzimage.resolve(), vmlinux.resolve())


class _Progress:
    """One status line (TTY) or a line every 30 s: steps done, estimate, elapsed."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.steps = 0
        self.start = time.monotonic()
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def line(self, line: str) -> None:
        m = _STEP.match(line)
        if not m:
            return
        self.steps += 1
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 30.0):
            return
        self.last = now
        self._show(f"{m.group(1)} {m.group(2)}")

    def _show(self, what: str) -> None:
        elapsed = time.monotonic() - self.start
        pct = min(99, 100 * self.steps // max(self.expected, 1))
        text = f"lab: kernel build {pct:3d}% {self.steps}/~{self.expected} " \
               f"{_mmss(elapsed)}  {what}"
        if self.tty:
            click.echo("\r" + text[:110].ljust(110), nl=False, err=True)
        else:
            click.echo(text, err=True)

    def done(self) -> None:
        if self.tty:
            click.echo("", err=True)
        click.echo(f"lab: kernel build finished in {_mmss(time.monotonic() - self.start)} "
                   f"({self.steps} steps)", err=True)


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

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Kernel lab
----------

The ``kho_inspect.lab`` package builds a Linux kernel with KHO, LUO, test_kho
and debug info (:mod:`~kho_inspect.lab.kernel`), a Debian sid guest root
filesystem (:mod:`~kho_inspect.lab.rootfs`), boots them under QEMU
(:mod:`~kho_inspect.lab.qemu`) and runs the handover scenario: preserve real
memory, kexec with KHO, and run kho-inspect in every kernel
(:mod:`~kho_inspect.lab.run`, guest side in ``vm/guest/``).

Everything built is cached under ``~/.cache/kho-inspect/`` (or
``$KHO_INSPECT_CACHE``), keyed by a hash of its inputs, and rebuilt only when
missing.

What the lab reads at run time (the guest scripts, the kernel config fragment,
the root filesystem's package list) lives in ``vm/`` of the repository; a
wheel carries the same files as ``kho_inspect/_vm/`` (``setup.py`` maps the
one onto the other). :func:`vm_dir` finds whichever is there, so the lab runs
from a checkout and from an installed wheel alike.

The lab reports progress through :mod:`logging` (loggers under
``kho_inspect.lab``); ``kho-inspect lab`` attaches the handler that prints it.
"""

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, TypeVar, Union

from kho_inspect.errors import LabError

__all__ = (
    "cache_root",
    "package_dir",
    "vm_dir",
    "digest",
    "run_checked",
    "require_tools",
    "cache_lock",
    "holding_cache_lock",
)

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)
_lock_depth = 0  # how deep this process is inside cache_lock()

StrPath = Union[str, "os.PathLike[str]"]


def cache_root() -> Path:
    """The lab's cache directory (``$KHO_INSPECT_CACHE`` or ``~/.cache/kho-inspect``)."""
    env = os.environ.get("KHO_INSPECT_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "kho-inspect"


@contextlib.contextmanager
def cache_lock(what: str) -> Iterator[None]:
    """Hold the lab cache's lock (``<cache>/.lock``, ``flock``) while finding or building
    ``what`` in it: two processes that need the same kernel or root filesystem (two
    pytest-xdist workers, two ``lab run``) would otherwise unpack and build into the same
    trees at once; the second waits, then finds it cached. Re-entrant in a process."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another kho-inspect process that holds %s/.lock "
                     "(it is building into the lab cache) before looking up %s", root, what)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0


def holding_cache_lock(what: str) -> Callable[[F], F]:
    """Decorate a function that finds or builds something in the lab cache so that it
    runs under :func:`cache_lock`."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with cache_lock(what):
                return fn(*args, **kwargs)
        return locked  # type: ignore[return-value]
    return decorate


def package_dir() -> Path:
    """The directory of the ``kho_inspect`` package that is running (checkout or installed).

    The guest imports this same package (shared over 9p), never another copy.
    """
    return Path(__file__).resolve().parents[1]


def vm_dir() -> Path:
    """The lab's guest side and configs: ``kho_inspect/_vm`` of an installed wheel, or
    ``vm/`` of the source checkout the package runs from.

    :raises LabError: neither holds ``guest/init`` (a broken installation).
    """
    pkg = package_dir()
    candidates = (pkg / "_vm", pkg.parent / "vm")
    for candidate in candidates:
        if (candidate / "guest" / "init").is_file():
            return candidate
    raise LabError(
        f"kho-inspect is installed without the lab's guest files (no guest/init in "
        f"{candidates[0]} or {candidates[1]}): reinstall it from a wheel or a checkout."
    )


def digest(parts: Iterable[Union[str, bytes]], length: int = 16) -> str:
    """A short hex SHA-256 over ``parts`` (each part length-prefixed)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def require_tools(tools: Sequence[str], hint: str = "run vm/ci-deps.sh") -> None:
    """:raises LabError: when one of the host ``tools`` is not on ``PATH``."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise LabError(f"The lab needs {', '.join(missing)} on this machine: {hint}.")


def run_checked(argv: Sequence[StrPath], what: str, cwd: Optional[StrPath] = None,
                log: Optional[Path] = None, env: Optional[dict] = None) -> str:
    """Run ``argv``; return its stdout, or raise :class:`LabError` naming ``what``.

    With ``log`` the combined output goes to that file instead of being returned.
    """
    args: List[str] = [os.fspath(a) for a in argv]
    try:
        if log is not None:
            with open(log, "w") as f:
                proc = subprocess.run(args, cwd=cwd, env=env, stdout=f,
                                      stderr=subprocess.STDOUT, text=True)
            out = ""
        else:
            proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
            out = proc.stdout
    except OSError as e:
        raise LabError(f"Cannot {what}: {args[0]}: {e.strerror}.") from e
    if proc.returncode != 0:
        detail = _tail(log.read_text(errors="replace") if log else proc.stderr + proc.stdout)
        where = f" (log: {log})" if log else ""
        raise LabError(f"Cannot {what}: {args[0]} exited {proc.returncode}{where}: {detail}")
    return out


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "no output"

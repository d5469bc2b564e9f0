# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect bootlog``: boot-time memblock allocations rebuilt from a memblock=debug log."""

import re
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

import click

from kho_inspect.bootlog import classify_allocations, parse_bootlog
from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.errors import InputError, KhoInspectError
from kho_inspect.model.bootlog import BootLog
from kho_inspect.model.memblock import FlagTable
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.printk import read_kernel_log
from kho_inspect.ranges import RangeSet
from kho_inspect.render import emit
from kho_inspect.snapshot import load_snapshot_file, read_snapshot
from kho_inspect.views.bootlog import CLASS_SECTIONS, allocation_classes, json_object, sections

__all__ = ("bootlog", "read_text")

BOOTLOG_EPILOG = """\b
Examples:
  kho-inspect bootlog --dmesg                # this kernel's printk buffer, classified
  kho-inspect bootlog console.log --all      # a saved log, every allocation
  kho-inspect bootlog console.log --snapshot n1.json --json   # offline, with N+1's snapshot
  dmesg | kho-inspect bootlog - --format markdown
  kho-inspect --core vmcore --vmlinux vmlinux bootlog --dmesg --json
\b
Boot with memblock=debug (and log_buf_len=8M so that the early lines survive). Each
memblock request line is paired with the __memblock_reserve line that carries its
range; flags are named from the kernel's debug info. On a KHO boot the scratch-only
window runs from "KHO: found kexec handover data." to memblock_free_all() (the next
line is SLUB's "HWalign="); every allocation in it must lie in scratch memory.
\b
Classes (in this order): original (kho_scratch[]), extended and unpreserved (from
the memblock flags, where memblock is kept), first-mib (x86: scratch until
reserve_real_mode() clears it), preserved (what the previous kernel handed over,
as this kernel sees it), other; "partly a+b" for a range that straddles.
Without a readable target or --snapshot FILE, classes are "unknown" and flags hex.
\b
Real output: docs/examples/bootlog.txt.
"""

_RELEASE = re.compile(r"Linux version (\S+)")


def read_text(path: str) -> str:
    """A text file (``-``: standard input), undecodable bytes replaced.

    :raises InputError: it cannot be read.
    """
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"Cannot read {path}: {e.strerror}", path=path) from e


def _release(text: str) -> Optional[str]:
    for line in text.splitlines()[:200]:
        match = _RELEASE.search(line)
        if match:
            return match.group(1)
    return None


def _explicit_target(session: Session) -> bool:
    spec = session.spec
    return bool(spec.core or spec.qemu or spec.vmlinux or session.program_ is not None)


def _from_target(session: Session, text: Optional[str]
                 ) -> Tuple[Optional[str], Optional[Snapshot], List[str]]:
    """The log text and the snapshot to classify it with; notes on what is missing."""
    try:
        prog = session.program()
    except KhoInspectError as e:
        if text is None or _explicit_target(session):
            raise
        return text, None, [f"No target could be opened ({e}): flags are shown in hex and "
                            "classes are unknown (give --snapshot FILE, or read the kernel "
                            "the log belongs to)."]
    log = read_kernel_log(prog) if text is None else None
    snap = read_snapshot(prog, sections=CLASS_SECTIONS, log=log, strict=session.debug)
    if text is None:
        return log, snap, []
    release = _release(text)
    if release and snap.release and release != snap.release:
        return text, None, [f"The log is of kernel {release} and the target runs "
                            f"{snap.release}: it was not classified against the target "
                            "(give --snapshot FILE of that kernel)."]
    return text, snap, []


def _classes_notes(snap: Snapshot) -> List[str]:
    notes = []
    if snap.scratch is None:
        notes.append(f"No scratch classes: {snap.why_missing('scratch')}")
    elif snap.memblock is None:
        notes.append("Extended and unpreserved scratch are unknown (they come from memblock "
                     f"flags): {snap.why_missing('memblock')}")
    if snap.preserved_in is None:
        notes.append(f"No preserved class: {snap.why_missing('preserved_in')}")
    return notes


@click.command(epilog=BOOTLOG_EPILOG)
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--dmesg", is_flag=True, help="Read the target's printk buffer instead of FILE.")
@click.option("--snapshot", "snapshot_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Take flag names and classes from this snapshot (no target needed).")
@click.option("--all", "every", is_flag=True,
              help="List every allocation and reservation, not only the scratch-only window's.")
@output_options
@pass_session
def bootlog(session: Session, file: Optional[str], dmesg: bool, snapshot_file: Optional[str],
            every: bool, fmt: str) -> None:
    """Boot-time memblock allocations from a memblock=debug log, with the scratch class of each.

    FILE is a saved kernel log ('-' reads standard input).
    """
    if (file is None) == (not dmesg):
        raise click.UsageError("give a log FILE or --dmesg (one of them)")
    text = read_text(file) if file is not None else None
    notes: List[str] = []
    if snapshot_file is not None:
        snap: Optional[Snapshot] = load_snapshot_file(snapshot_file, "snapshot")
        if text is None:
            text = read_kernel_log(session.program())
    else:
        text, snap, notes = _from_target(session, text)
    assert text is not None
    flags = snap.memblock_flags if snap is not None else FlagTable({})
    classes: Sequence[Tuple[str, RangeSet]] = allocation_classes(snap) if snap else []
    log = parse_bootlog(text, flags)
    if snap is not None:
        log = classify_allocations(log, classes)
        notes += _classes_notes(snap)
    emit(fmt, json_object(log, classes, notes), lambda: sections(log, notes, every))


def boot_log_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--bootlog FILE`` and ``--dmesg``, as ``check`` and ``report`` take them."""
    func = click.option("--dmesg", is_flag=True, help="Read this kernel's log from the "
                        "target's printk buffer instead.")(func)
    return click.option("--bootlog", "bootlog_file", metavar="FILE",
                        type=click.Path(dir_okay=False),
                        help="This kernel's boot log (dmesg, serial console; '-' reads "
                             "stdin).")(func)


def classified_boot_log(current: Snapshot, text: Optional[str]) -> Optional[BootLog]:
    """The boot log ``text`` parsed with ``current``'s flag names and classified
    against its scratch classes and preserved memory (``None`` without a log)."""
    if text is None:
        return None
    log = parse_bootlog(text, current.memblock_flags)
    return classify_allocations(log, allocation_classes(current))

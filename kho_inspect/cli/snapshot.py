# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect snapshot``: save what the next kernel must be checked against."""

import json
import os
import sys
from typing import Any, Optional

import click

from kho_inspect.cli.session import Session, pass_session
from kho_inspect.errors import InputError
from kho_inspect.model.snapshot import (
    SNAPSHOT_SCHEMA,
    SNAPSHOT_VERSION,
    Snapshot,
    snapshot_document,
)
from kho_inspect.snapshot import read_snapshot

__all__ = ("snapshot", "taken_from", "write_json")

SNAPSHOT_EPILOG = f"""\b
Examples:
  kho-inspect snapshot -o /var/lib/kho-inspect/snapshot.json   # in kernel N, before kexec -e
  kho-inspect snapshot -o - | jq .snapshot.activation          # to standard output
  kho-inspect --core vmcore --vmlinux vmlinux snapshot -o n0.json
  scripts/kho-kexec -o FILE                  # snapshot, then kexec -e (refuses if it fails)
\b
Then, in kernel N+1:
  kho-inspect check --previous /var/lib/kho-inspect/snapshot.json
  kho-inspect kho preserved --from snapshot /var/lib/kho-inspect/snapshot.json
\b
The file is a {SNAPSHOT_SCHEMA} document, version {SNAPSHOT_VERSION}: the release and
command line, whether KHO is active and why not, memblock (where kept), the scratch
areas and classes, the outgoing preserved ranges and the radix tree's own pages,
both root FDTs summarised, gigantic hugetlb pages, the kernel image and initrd
ranges and reserve_mem=. A section that cannot be read is null, with the reason
under "missing". The outgoing tree and FDT are read last, close to the kexec.
\b
Real output: docs/examples/snapshot.txt.
"""


def taken_from(session: Session) -> Optional[str]:
    """``"qemu"`` or ``"vmcore"`` from the target options; ``None`` lets the
    reader tell a live kernel from a dump."""
    if session.spec.qemu:
        return "qemu"
    if session.spec.core:
        return "vmcore"
    return None


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` (``-``: standard output), atomically:
    a reader (or a kexec in the middle) never sees half a file.

    A regular file (or a symbolic link to one, which stays a link) is replaced
    through a temporary file in its directory; anything else that exists
    (``/dev/stdout``, a FIFO, a terminal) is written in place, never replaced.

    :raises InputError: the file cannot be written.
    """
    text = json.dumps(obj, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    target = os.path.realpath(path)
    try:
        if os.path.exists(target) and not os.path.isfile(target):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return
        import tempfile  # here: check imports this module, and tempfile costs ~3 ms

        fd, tmp = tempfile.mkstemp(prefix=".kho-inspect-", dir=os.path.dirname(target))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        raise InputError(f"Cannot write {path}: {e.strerror}", path=path) from e


def summary(snap: Snapshot) -> str:
    """One line about what a snapshot holds and lacks."""
    act = snap.activation.state if snap.activation is not None else "unknown"
    parts = [f"kernel {snap.release or '?'}", f"KHO {act}"]
    if snap.preserved_out is not None:
        parts.append(f"{len(snap.preserved_out.ranges)} preserved ranges, "
                     f"{len(snap.preserved_out.tree_pages)} radix tree pages")
    if snap.scratch is not None:
        parts.append(f"{len(snap.scratch.areas)} scratch areas")
    lacking = sorted({*snap.missing, *snap.corrupt})
    if lacking:
        parts.append("without " + ", ".join(lacking) + " (reasons under \"missing\")")
    return "; ".join(parts)


@click.command(epilog=SNAPSHOT_EPILOG)
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
              help="Where to write the snapshot ('-': standard output).")
@pass_session
def snapshot(session: Session, output: str) -> None:
    """Save everything the next kernel is checked against (run it just before kexec -e)."""
    snap = read_snapshot(session.program(), taken_from=taken_from(session),
                         strict=session.debug)
    write_json(output, snapshot_document(snap))
    if output != "-":
        click.echo(f"kho-inspect: snapshot written to {output}: {summary(snap)}", err=True)

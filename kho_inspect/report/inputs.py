# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Report inputs
-------------

The ``kho_inspect.report.inputs`` module holds :class:`ReportInputs`: the
snapshot a report is about and everything given with it (check results, the
previous kernel's snapshot, the boot log, a trace summary, the names of the
input files).
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from kho_inspect.diff import SnapshotDiff, diff_snapshots
from kho_inspect.model.bootlog import BootLog
from kho_inspect.model.check import CheckReport
from kho_inspect.model.snapshot import Snapshot

__all__ = ("ReportInputs",)


@dataclass(frozen=True)
class ReportInputs:
    """What a report is made of.

    :param snapshot: the kernel reported on.
    :param checks: the rules run on it (``None``: not run).
    :param previous: the snapshot the previous kernel saved before ``kexec -e``.
    :param bootlog: this kernel's boot log, parsed.
    :param trace: a trace file's summary (:func:`~kho_inspect.report.summary.trace_summary`).
    :param sources: input files by role (``"previous"``, ``"bootlog"``,
        ``"trace"``, ``"snapshot"``), named in the report.
    :param tool: the program and version that wrote the report.
    """

    snapshot: Snapshot
    checks: Optional[CheckReport] = None
    previous: Optional[Snapshot] = None
    bootlog: Optional[BootLog] = None
    trace: Optional[Mapping[str, Any]] = None
    sources: Mapping[str, str] = field(default_factory=dict)
    tool: str = "kho-inspect"

    def diff(self) -> Optional[SnapshotDiff]:
        """What changed since the previous kernel, if it is given."""
        if self.previous is None:
            return None
        names = (self.previous.release or "previous", self.snapshot.release or "this kernel")
        if names[0] == names[1]:
            names = ("previous", "this kernel")
        return diff_snapshots(self.previous, self.snapshot, names)

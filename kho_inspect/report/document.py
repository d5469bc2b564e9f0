# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Report document
---------------

The ``kho_inspect.report.document`` module builds ``report.json``: a
``kho-inspect/report`` document (schema and version first, see
docs/report-schema.md) with the summaries of :mod:`kho_inspect.report.summary`,
the check results, the changes since the previous kernel and the whole
snapshot, so that the file alone can be checked, diffed or drawn again.
"""

from typing import Any, Dict, Mapping, Optional

from kho_inspect.diff import SnapshotDiff
from kho_inspect.model.base import document, to_json
from kho_inspect.report.inputs import ReportInputs
from kho_inspect.report.summary import (
    bootlog_summary,
    hugetlb_summary,
    kernel_summary,
    memblock_summary,
    preserved_summary,
    scratch_summary,
)

__all__ = ("REPORT_SCHEMA", "REPORT_VERSION", "report_document")

REPORT_SCHEMA = "kho-inspect/report"
REPORT_VERSION = 1


def _previous(inputs: ReportInputs) -> Optional[Dict[str, Any]]:
    prev = inputs.previous
    if prev is None:
        return None
    return {"release": prev.release, "taken_from": prev.taken_from,
            "file": inputs.sources.get("previous")}


def report_document(inputs: ReportInputs, diff: Optional[SnapshotDiff],
                    files: Mapping[str, str], redacted: bool) -> Dict[str, Any]:
    """The ``report.json`` object (before redaction).

    :param files: the report's file names by role (``markdown``, ``json``, ``map``).
    :param redacted: whether kernel virtual addresses will be redacted.
    """
    snap = inputs.snapshot
    return document(REPORT_SCHEMA, REPORT_VERSION, {
        "tool": inputs.tool,
        "redacted": redacted,
        "files": dict(files),
        "sources": dict(inputs.sources),
        "kernel": kernel_summary(snap),
        "checks": None if inputs.checks is None else inputs.checks.to_json(),
        "memblock": memblock_summary(snap),
        "scratch": scratch_summary(snap),
        "preserved": preserved_summary(snap),
        "hugetlb": hugetlb_summary(snap),
        "bootlog": bootlog_summary(inputs.bootlog, snap),
        "trace": None if inputs.trace is None else dict(inputs.trace),
        "previous": _previous(inputs),
        "diff": None if diff is None else diff.to_json(),
        "missing": dict(snap.missing),
        "corrupt": dict(snap.corrupt),
        "snapshot": to_json(snap),
    })

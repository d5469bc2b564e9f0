# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Reports
-------

The ``kho_inspect.report`` package builds what ``kho-inspect report`` writes
into its output directory, for a patch author to attach or a reviewer to
read:

``report.md``
    the kernel and its command line, every check result with its evidence,
    memblock by flag, the scratch classes and their cost, preserved memory by
    order, gigantic pages, and the boot-log, trace and previous-kernel
    summaries when given (:mod:`~kho_inspect.report.markdown`);
``report.json``
    the same summaries, the check results and the whole snapshot, as a
    versioned ``kho-inspect/report`` document (docs/report-schema.md;
    :mod:`~kho_inspect.report.document`);
``memory-map.svg``
    the physical address space as lanes (:mod:`kho_inspect.views.memmap`).

Kernel virtual addresses are redacted in all three (:mod:`kho_inspect.redact`)
unless asked otherwise; physical addresses stay. Everything here is pure:
:func:`build` returns the files' names and text, and the command line writes
them.
"""

import io
from typing import Dict

from kho_inspect.redact import Redactor
from kho_inspect.render import dump_json
from kho_inspect.report.document import report_document
from kho_inspect.report.inputs import ReportInputs
from kho_inspect.report.markdown import markdown
from kho_inspect.views.memmap import MISSING_DRAWSVG, available, memory_map

__all__ = ("FILES", "ReportInputs", "build")

FILES = {"markdown": "report.md", "json": "report.json", "map": "memory-map.svg"}
"""The files of a report directory, by role."""


def build(inputs: ReportInputs, redact: bool = True) -> Dict[str, str]:
    """The report's files, name -> text, with kernel virtual addresses redacted
    unless ``redact`` is false. Without drawsvg there is no map, and report.md
    says why."""
    redactor = Redactor(inputs.snapshot.arch, enabled=redact)
    diff = inputs.diff()
    files = dict(FILES) if available() else {k: v for k, v in FILES.items() if k != "map"}
    doc = redactor.json(report_document(inputs, diff, files=files, redacted=redact))
    out = io.StringIO()
    dump_json(doc, out)
    map_note = files.get("map") or f"no map: {MISSING_DRAWSVG} (pip install drawsvg)"
    result = {
        FILES["markdown"]: redactor.text(markdown(inputs, diff, map_note, redacted=redact)),
        FILES["json"]: out.getvalue(),
    }
    if "map" in files:
        result[FILES["map"]] = redactor.text(memory_map(inputs.snapshot, inputs.checks))
    return result

# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Lab results
-----------

Read back what ``kho-inspect lab run --out DIR`` left: ``DIR/summary.json``,
each stage's kho-inspect outputs (``DIR/nK/kho-inspect/<name>.txt``, ``.json``
and ``.txt.err``) and the tail of ``DIR/serial.log``. The views in
:mod:`kho_inspect.views.lab` present them.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kho_inspect.errors import LabError

__all__ = ("read_summary", "read_json", "stage_outputs", "stage_digest", "show_json",
           "problems", "serial_tail")


def read_summary(out: Path) -> Dict[str, Any]:
    """``DIR/summary.json``.

    :raises LabError: it is missing or not JSON.
    """
    path = out / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LabError(f"{path} is missing or unreadable ({e}): run kho-inspect lab run "
                       f"--out {out} first.") from e


def read_json(path: Path) -> Optional[Any]:
    """The JSON document in ``path``, or ``None`` when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str:
    return path.read_text(errors="replace").rstrip() if path.is_file() else ""


def stage_outputs(out: Path, summary: Dict[str, Any], stages: Sequence[str] = (),
                  names: Sequence[str] = ()) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{stage: {name: {"text", "json", "error"}}}`` of the in-guest commands of the
    run's ``stages`` (default: all), only ``names`` (command file stems such as
    ``kho-status``) if given.

    ``text`` is the text rendering, ``json`` the parsed ``--json`` output (``None`` when
    there is none or it is not JSON), ``error`` the text run's standard error.

    :raises LabError: the run has no such stage, or no stage has such a command.
    """
    known = list(summary["stages"])
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise LabError(f"{out} has no stage {', '.join(unknown)}: its stages are "
                       f"{', '.join(known)}.")
    found: Dict[str, Dict[str, Dict[str, Any]]] = {}
    seen = set()
    for stage in (s for s in known if not stages or s in stages):
        per: Dict[str, Dict[str, Any]] = {}
        for path in sorted((out / stage / "kho-inspect").glob("*.txt")):
            seen.add(path.stem)
            if names and path.stem not in names:
                continue
            per[path.stem] = {"text": _read_text(path),
                              "json": read_json(path.with_suffix(".json")),
                              "error": _read_text(path.with_suffix(".txt.err"))}
        found[stage] = per
    missing = [n for n in names if n not in seen]
    if missing:
        raise LabError(f"{out} holds no output of {', '.join(missing)}: the commands are "
                       f"{', '.join(sorted(seen)) or 'none'}.")
    return found


def stage_digest(out: Path, summary: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{stage: {"check": ..., "reports": [{"path", "map"}, ...]}}`` for ``lab show``'s
    short form: the ``summary`` of the stage's in-guest ``check`` JSON (``None`` without
    one), and the report directories its commands wrote into ``nK/kho-inspect/`` and, at
    the ``--cores`` pause, ``nK/host/`` (``report -o {results}/...``), ``map`` telling
    whether memory-map.svg is there (the guest's Python may lack drawsvg)."""
    digest = {}
    for stage in summary["stages"]:
        results = out / stage / "kho-inspect"
        check = None
        for path in sorted(results.glob("check*.json")):
            doc = read_json(path)
            if isinstance(doc, dict) and doc.get("schema") == "kho-inspect/check":
                check = doc.get("summary")
                break
        reports = [{"path": p.parent, "map": (p.parent / "memory-map.svg").is_file()}
                   for side in ("kho-inspect", "host")
                   for p in sorted((out / stage / side).glob("*/report.md"))]
        digest[stage] = {"check": check, "reports": reports}
    return digest


def show_json(summary: Dict[str, Any],
              outputs: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """``lab show --json``: ``{"summary": ..., "outputs": {stage: {name: <--json output>}},
    "errors": {stage: {name: <standard error>}}}`` (errors only where there were any)."""
    errors = {stage: {name: o["error"] for name, o in per.items() if o["error"]}
              for stage, per in outputs.items()}
    return {"summary": summary,
            "outputs": {stage: {name: o["json"] for name, o in per.items()}
                        for stage, per in outputs.items()},
            "errors": {stage: per for stage, per in errors.items() if per}}


def problems(summary: Dict[str, Any]) -> List[str]:
    """The run's problems, then each stage's prefixed with its name."""
    out = list(summary.get("problems", []))
    for name, st in summary["stages"].items():
        out += [f"{name}: {p}" for p in st.get("problems", [])]
    return out


def serial_tail(out: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of ``DIR/serial.log``."""
    path = out / "serial.log"
    if not path.is_file():
        return "(no serial log)"
    text = path.read_text(errors="replace").rstrip().splitlines()
    return "\n".join(text[-lines:])

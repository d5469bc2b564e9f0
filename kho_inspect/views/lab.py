# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Lab views
---------

Sections of ``kho-inspect lab run`` and ``lab show``: the run with one row per
stage (release, KHO boot, test_kho, memfd, the commands' exit codes in the guest
and on the host, the verdict), then, for ``lab show``, each stage's kho-inspect
text output. The input is the run's ``summary.json`` as loaded (see
:mod:`kho_inspect.lab.run`) and the outputs read by
:func:`kho_inspect.lab.results.stage_outputs`.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence

from kho_inspect.render import Section

__all__ = ("run_section", "output_section", "show_sections")

STAGE_HEADERS = ("stage", "release", "KHO boot", "test_kho", "memfd", "exit codes",
                 "host codes", "verified")


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _codes(codes: Optional[Mapping[str, int]]) -> str:
    return " ".join(str(c) for c in (codes or {}).values()) or "-"


def _stage_row(name: str, st: Mapping[str, Any], before_kexec: bool) -> List[str]:
    row = [name, st.get("release") or "-", _yes_no(st.get("kho_boot")),
           st.get("test_kho") or "-", _yes_no(st.get("memfd_verified")),
           _codes(st.get("commands"))]
    if before_kexec:
        row.append(_codes(st.get("before_kexec")))
    row += [_codes((st.get("host") or {}).get("commands")), "yes" if st["verified"] else "NO"]
    return row


def _lab_kernel_notes(kernel: Optional[Mapping[str, Any]]) -> List[str]:
    """The lab kernel by name and the words it adds to every command line."""
    if not kernel:
        return []
    notes = [f"lab kernel {kernel['name']}: {kernel['description']}"]
    if kernel.get("cmdline"):
        notes.append("every stage boots with the lab kernel's words: "
                     + " ".join(kernel["cmdline"]))
    return notes


def _run_notes(summary: Mapping[str, Any]) -> List[str]:
    notes = [f"kernel {summary['bzImage']}",
             *_lab_kernel_notes(summary.get("lab_kernel")),
             f"accel {summary['accel']}, {summary['memory_mib']} MiB, {summary['cpus']} CPUs, "
             f"hops {summary['hops']}"]
    for stage, words in (summary.get("stage_append") or {}).items():
        notes.append(f"{stage} boots with the extra words: {words}")
    return notes


def run_section(summary: Mapping[str, Any], title: str = "Lab run") -> Section:
    """One row per stage of ``summary``, the kernel and machine as notes."""
    stages: Dict[str, Any] = summary["stages"]
    before_kexec = any(st.get("before_kexec") for st in stages.values())
    headers = list(STAGE_HEADERS)
    if before_kexec:
        headers.insert(headers.index("host codes"), "before kexec")
    rows = [_stage_row(name, st, before_kexec) for name, st in stages.items()]
    return Section(title=title, headers=headers, rows=rows, notes=_run_notes(summary))


def output_section(stage: str, name: str, output: Mapping[str, Any]) -> Section:
    """One command's text output (then its standard error) as a preformatted block."""
    lines = (output.get("text") or "(no output)").splitlines()
    if output.get("error"):
        lines += output["error"].splitlines()
    return Section(title=f"{stage}: kho-inspect {name.replace('-', ' ')}", block=lines)


def show_sections(summary: Mapping[str, Any],
                  outputs: Mapping[str, Mapping[str, Mapping[str, Any]]],
                  title: str = "Lab run") -> List[Section]:
    """``lab show``: the run, then every output of ``outputs`` (``{stage: {name: ...}}``)."""
    sections: Sequence[Section] = [output_section(stage, name, output)
                                   for stage, per in outputs.items()
                                   for name, output in per.items()]
    return [run_section(summary, title), *sections]

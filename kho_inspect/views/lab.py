# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Lab views
---------

Sections of ``kho-inspect lab run`` and ``lab show``: the run with one row per
stage (release, KHO boot, test_kho, memfd, the commands' exit codes in the guest
and on the host, the verdict), then, for ``lab show --all``, each stage's
kho-inspect text output. ``lab show`` without it prints one screen: the verdict,
one row per stage with its check summary, the report directories and where the
details are. The input is the run's ``summary.json`` as loaded (see
:mod:`kho_inspect.lab.run`), the outputs read by
:func:`kho_inspect.lab.results.stage_outputs` and the per-stage digest of
:func:`kho_inspect.lab.results.stage_digest`.
"""

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from kho_inspect.render import Section

__all__ = ("run_section", "output_section", "show_sections", "summary_sections",
           "check_cell")

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


# --- lab show: one screen -----------------------------------------------------------------

SUMMARY_HEADERS = ("stage", "release", "boot", "test_kho", "memfd", "commands", "check",
                   "verified")
MAX_PROBLEMS = 5
REPORT_FILES = "report.md, report.json, memory-map.svg"
NO_MAP = "no (no drawsvg where it ran)"


def check_cell(check: Optional[Mapping[str, Any]]) -> str:
    """A ``check`` JSON summary in a few words; ``-`` for a stage without check.

    >>> check_cell({"pass": 25, "fail": 1, "skip": 2, "failed": ["preserved-reserved"]})
    '25 passed, 1 failed, 2 skipped; failed: preserved-reserved'
    """
    if not check:
        return "-"
    text = f"{check['pass']} passed, {check['fail']} failed, {check['skip']} skipped"
    return text + (f"; failed: {', '.join(check['failed'])}" if check.get("failed") else "")


def _commands_cell(st: Mapping[str, Any]) -> str:
    """How many commands ran in the stage (guest, before kexec, host) and how many failed."""
    codes = [*(st.get("commands") or {}).values(), *(st.get("before_kexec") or {}).values(),
             *((st.get("host") or {}).get("commands") or {}).values()]
    failed = sum(1 for code in codes if code != 0)
    if not codes:
        return "-"
    return f"{len(codes)} ok" if not failed else f"{failed} of {len(codes)} failed"


def _boot_cell(kho_boot: Optional[bool]) -> str:
    return "-" if kho_boot is None else ("KHO" if kho_boot else "cold")


def _memfd_cell(st: Mapping[str, Any]) -> str:
    verified = st.get("memfd_verified")
    return "-" if verified is None else ("verified" if verified else "MISMATCH")


def _short_run_notes(summary: Mapping[str, Any]) -> List[str]:
    """The kernel by name (its bzImage for a --kernel-dir run) and the machine on one
    line, then each stage's own command-line words."""
    kernel = summary.get("lab_kernel")
    name = f"lab kernel {kernel['name']}" if kernel else f"kernel {summary['bzImage']}"
    notes = [f"{name}, accel {summary['accel']}, {summary['memory_mib']} MiB, "
             f"{summary['cpus']} CPUs, hops {summary['hops']}"]
    notes += [f"{stage} boots with the extra words: {words}"
              for stage, words in (summary.get("stage_append") or {}).items()]
    return notes


def _verdict(summary: Mapping[str, Any], problems: Sequence[str]) -> str:
    if summary.get("ok") and not problems:
        return "every stage verified"
    return f"FAILED ({len(problems)} problem{'s' if len(problems) != 1 else ''})"


def summary_sections(summary: Mapping[str, Any], digest: Mapping[str, Mapping[str, Any]],
                     out: Path, problems: Sequence[str] = ()) -> List[Section]:
    """``lab show`` without ``--all``: the verdict and one row per stage, the run's
    problems (the first few), the report directories, where the details are."""
    rows = [[name, st.get("release") or "-", _boot_cell(st.get("kho_boot")),
             st.get("test_kho") or "-", _memfd_cell(st), _commands_cell(st),
             check_cell((digest.get(name) or {}).get("check")),
             "yes" if st.get("verified") else "NO"]
            for name, st in summary["stages"].items()]
    notes = [f"FAILED: {p}" for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        notes.append(f"... and {len(problems) - MAX_PROBLEMS} more (--json shows them all)")
    notes += _short_run_notes(summary)
    sections = [Section(title=f"Lab run {out}: {_verdict(summary, problems)}",
                        headers=SUMMARY_HEADERS, rows=rows, notes=notes)]
    reports = [[name, str(r["path"]), "yes" if r["map"] else NO_MAP]
               for name, d in digest.items() for r in d.get("reports", ())]
    if reports:
        sections.append(Section(title=f"Reports ({REPORT_FILES})",
                                headers=("stage", "directory", "memory map"), rows=reports))
    sections.append(Section(title="Details", block=[
        f"every command's output:  kho-inspect lab show {out} --all",
        f"per stage:               {out}/nK/kho-inspect/<command>.txt, .json; "
        f"{out}/nK/dmesg.txt",
        f"the console:             {out}/serial.log",
    ]))
    return sections

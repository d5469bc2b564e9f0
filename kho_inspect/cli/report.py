# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect report``: a directory to attach to a patch (Markdown, JSON, SVG map)."""

import json
import os
from typing import Any, Dict, Optional

import click

from kho_inspect import __version__
from kho_inspect.checks import run_checks
from kho_inspect.cli.bootlog import boot_log_options, classified_boot_log, read_text
from kho_inspect.cli.session import Session, pass_session
from kho_inspect.cli.snapshot import taken_from
from kho_inspect.errors import InputError
from kho_inspect.model.bootlog import BootLog
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.printk import read_kernel_log
from kho_inspect.report import FILES, ReportInputs, build
from kho_inspect.report.summary import trace_summary
from kho_inspect.snapshot import load_snapshot_file, read_snapshot

__all__ = ("report",)

REPORT_EPILOG = f"""\b
Examples:
  kho-inspect report -o report/ --previous /var/lib/kho-inspect/snapshot.json --dmesg
  kho-inspect --core vmcore --vmlinux vmlinux report -o report/ --previous n0.json
  kho-inspect report -o report/ --snapshot n1.json --previous n0.json --bootlog n1/dmesg
  kho-inspect report -o report/ --trace trace.json --no-redact
\b
Writes {FILES['markdown']} (kernel and command line, every check result with its
evidence, memblock by flag, scratch classes and their cost, preserved memory by order,
gigantic pages, boot-log and trace summaries, changes since --previous),
{FILES['json']} (the same as a versioned kho-inspect/report document with the whole
snapshot; see docs/report-schema.md) and {FILES['map']} (the physical address
space as lanes: memory and reserved regions by flag, scratch classes, preserved
ranges, gigantic pages, violations in red).
\b
--snapshot reports on a file saved by `kho-inspect snapshot` instead of the target.
--trace takes a JSON object with an "events" list (the trace format is preliminary;
events are counted by kind). Kernel virtual addresses are redacted (shown as <kva-N>)
unless --no-redact is given; physical addresses are shown as they are.
\b
Exit codes: 0 every rule that ran passed, 1 a rule failed (the report is written
either way), 2 the target or an input could not be read, or bad usage.
\b
Real output: docs/examples/report.txt.
"""


def _bootlog(session: Session, current: Snapshot, path: Optional[str],
             dmesg: bool) -> Optional[BootLog]:
    if path is None and not dmesg:
        return None
    text = read_text(path) if path is not None else read_kernel_log(session.program())
    return classified_boot_log(current, text)


def _trace(path: Optional[str]) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    try:
        obj = json.loads(read_text(path))
    except ValueError as e:
        raise InputError(f"The trace file {path} is not JSON ({e})", path=path,
                         given="trace") from e
    return trace_summary(obj, f"the trace file {path}")


def _write(directory: str, files: Dict[str, str]) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        for name, text in files.items():
            with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as e:
        raise InputError(f"Cannot write the report to {directory}: {e.strerror}",
                         path=directory, given="output") from e


def _sources(**paths: Optional[str]) -> Dict[str, str]:
    return {role: path for role, path in paths.items() if path}


@click.command(epilog=REPORT_EPILOG)
@click.option("-o", "--output", metavar="DIR", required=True,
              help="Directory to write the report into (created if needed).")
@click.option("--snapshot", "snapshot_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Report on this saved snapshot instead of the target.")
@click.option("--previous", metavar="FILE", type=click.Path(dir_okay=False),
              help="The snapshot kernel N saved before kexec (kho-inspect snapshot -o FILE).")
@boot_log_options
@click.option("--trace", "trace_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="A trace file to summarise (JSON with an \"events\" list).")
@click.option("--no-redact", is_flag=True,
              help="Keep kernel virtual addresses (they reveal the KASLR offset).")
@pass_session
def report(session: Session, output: str, snapshot_file: Optional[str],
           previous: Optional[str], bootlog_file: Optional[str], dmesg: bool,
           trace_file: Optional[str], no_redact: bool) -> int:
    """Write report.md, report.json and memory-map.svg about this kernel (and its handover)."""
    if bootlog_file is not None and dmesg:
        raise click.UsageError("--bootlog and --dmesg are mutually exclusive")
    if snapshot_file is not None and dmesg:
        raise click.UsageError("--dmesg reads the target; with --snapshot give --bootlog FILE")
    prev = load_snapshot_file(previous, "previous") if previous else None
    trace = _trace(trace_file)
    if snapshot_file is not None:
        current = load_snapshot_file(snapshot_file, "snapshot")
    else:
        current = read_snapshot(session.program(), taken_from=taken_from(session),
                                strict=session.debug)
    log = _bootlog(session, current, bootlog_file, dmesg)
    checks = run_checks(current, prev, log)
    inputs = ReportInputs(current, checks, prev, log, trace,
                          _sources(snapshot=snapshot_file, previous=previous,
                                   bootlog=bootlog_file or ("printk buffer" if dmesg else None),
                                   trace=trace_file),
                          tool=f"kho-inspect {__version__}")
    files = build(inputs, redact=not no_redact)
    _write(output, files)
    s = checks.summary()
    verdict = f"{s['fail']} rule(s) FAILED: {', '.join(s['failed'])}" if s["fail"] else \
        "every rule that ran passed"
    click.echo(f"kho-inspect: report written to {output} ({', '.join(files)}); {verdict}.")
    return checks.exit_status

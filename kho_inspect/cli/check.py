# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect check``: judge a kernel (and its handover) by every placement rule."""

from typing import TYPE_CHECKING, Optional, Tuple

import click

from kho_inspect.checks import catalogue, run_checks, select_rules
from kho_inspect.cli.bootlog import boot_log_options, classified_boot_log, read_text
from kho_inspect.cli.session import Session, output_options, pass_session
from kho_inspect.cli.snapshot import taken_from, write_json
from kho_inspect.model.base import document
from kho_inspect.model.check import CHECK_SCHEMA, CHECK_VERSION
from kho_inspect.printk import read_kernel_log
from kho_inspect.render import emit
from kho_inspect.snapshot import load_snapshot_file, read_snapshot
from kho_inspect.views.check import catalogue_sections, sections, verdict

if TYPE_CHECKING:
    from kho_inspect.model.trace import TraceRun

__all__ = ("check",)

CHECK_EPILOG = """\b
Examples:
  kho-inspect check --list                   # the rules, what each needs, the kernel code
  kho-inspect check                          # this kernel alone (rules needing N skip)
  kho-inspect check --previous /var/lib/kho-inspect/snapshot.json --dmesg
  kho-inspect check --previous n0.json --bootlog console.log --rule scratch-cma
  kho-inspect check --previous n0.json --output check.json     # JSON report too
  kho-inspect check --trace trace.json       # judge a saved kho-inspect trace run too
  kho-inspect --core vmcore --vmlinux vmlinux check --previous n0.json --dmesg
\b
In kernel N, right before kexec -e, save the snapshot (scripts/kho-kexec does):
  kho-inspect snapshot -o /var/lib/kho-inspect/snapshot.json
\b
--dmesg reads this kernel's printk buffer (from the target: a live kernel, a vmcore
or a QEMU guest); boot with memblock=debug (and log_buf_len=8M) so that it holds the
early memblock allocations. Rules that need what is not there skip and say why
(--previous, a boot log, memblock kept after boot, ...).
\b
Exit codes: 0 every rule that ran passed, 1 a rule failed, 2 the target could not be
inspected or bad input (usage errors included). The text output ends with the verdict.
\b
Real output: docs/examples/check.txt.
"""


def _load_trace(path: str) -> "TraceRun":
    # Imported here, as openmetrics below: only the runs that ask pay for them
    # (check is benchmarked end to end, bench/bench_check.py).
    from kho_inspect.tracing import load_trace_file

    return load_trace_file(path)


@click.command(epilog=CHECK_EPILOG)
@click.option("--previous", metavar="FILE", type=click.Path(dir_okay=False),
              help="The snapshot kernel N saved before kexec (kho-inspect snapshot -o FILE).")
@boot_log_options
@click.option("--trace", "trace_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="A run of 'kho-inspect trace -o FILE' on this kernel (the trace-* rules).")
@click.option("--rule", "rules", metavar="ID", multiple=True,
              help="Run only this rule (repeatable; --list shows the ids).")
@click.option("--list", "list_rules", is_flag=True,
              help="Print the rules and exit (no target needed).")
@click.option("--output", metavar="FILE", help="Also write the JSON report to FILE.")
@output_options(extra=("openmetrics",))
@pass_session
def check(session: Session, previous: Optional[str], bootlog_file: Optional[str],
          dmesg: bool, trace_file: Optional[str], rules: Tuple[str, ...], list_rules: bool,
          output: Optional[str], fmt: str) -> int:
    """Check the placement rules of a KHO handover on this kernel (N+1) against N."""
    if bootlog_file is not None and dmesg:
        raise click.UsageError("--bootlog and --dmesg are mutually exclusive")
    if list_rules:
        fmt = "text" if fmt == "openmetrics" else fmt
        infos = catalogue()
        emit(fmt, [i.to_json() for i in infos], lambda: catalogue_sections(infos))
        return 0
    only = list(rules) or None
    select_rules(only)  # an unknown id is bad input: say so before reading anything
    prev = load_snapshot_file(previous, "previous") if previous else None
    traced = _load_trace(trace_file) if trace_file else None
    text = read_text(bootlog_file) if bootlog_file is not None else None
    prog = session.program()
    if dmesg:
        text = read_kernel_log(prog)
    current = read_snapshot(prog, taken_from=taken_from(session), strict=session.debug,
                            log=text if dmesg else None)
    report = run_checks(current, prev, classified_boot_log(current, text), only, traced)
    doc = document(CHECK_SCHEMA, CHECK_VERSION, report.to_json())
    if output:
        write_json(output, doc)
    if fmt == "openmetrics":  # for node_exporter's textfile collector
        from kho_inspect.views.metrics import openmetrics

        click.echo(openmetrics(report, current), nl=False)
        return report.exit_status
    details = f"--output {output}" if output else "--format json / --output FILE"
    emit(fmt, doc, lambda: [*sections(report), verdict(report, details)])
    return report.exit_status

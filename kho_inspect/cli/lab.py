# SPDX-License-Identifier: LGPL-2.1-or-later
"""``kho-inspect lab ...``: build the KHO kernel lab and run the handover scenario.

The lab library (:mod:`kho_inspect.lab`) reports progress through :mod:`logging`;
the ``lab`` group attaches :class:`LabLogHandler`, which prints it on standard
error as ``lab: ...`` and the guest's console lines as ``guest: ...``.
"""

import logging
import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from kho_inspect.cli.session import output_options
from kho_inspect.errors import EXIT_VIOLATIONS
from kho_inspect.lab.kernel import ARCHES, KERNEL_NAMES, PLAIN
from kho_inspect.render import emit

__all__ = ("lab", "LabLogHandler")

LAB_LOGGER = "kho_inspect.lab"
GUEST_LOGGER = "kho_inspect.lab.guest"
PROGRESS_LOGGER = "kho_inspect.lab.kernel.progress"

LAB_EPILOG = """\b
Examples:
  kho-inspect lab build                       # fetch linux-source-7.3, build kernel + rootfs
  kho-inspect lab build --kernel 7.3+unpreserved   # the patched kernel (incremental)
  kho-inspect lab run --out lab-out           # cold boot, one KHO kexec, kho-inspect in both
  kho-inspect lab run --out lab-out --kernel 7.3+unpreserved-broken --hops 2
  kho-inspect lab run --out lab-out --hops 2 --memory 6G --cores \\
      --append "hugepagesz=1G hugepages=2 memblock=debug"
  kho-inspect lab run --out lab-out --kernel-dir ~/linux/build   # your own kernel tree
  kho-inspect lab show lab-out                # verdicts, checks and report directories
  kho-inspect --core lab-out/n1/vmcore --vmlinux KERNEL/vmlinux memblock
"""

RUN_EPILOG = """\b
Examples:
  kho-inspect lab run --out lab-out
  kho-inspect lab run --out lab-out --hops 2 --memory 6G --cores \\
      --append "hugepagesz=1G hugepages=2 memblock=debug"
  kho-inspect lab run --out lab-out --numa 2 --cpus 2 --accel tcg
  kho-inspect lab run --out lab-out --kernel-dir ~/linux/build --timeout 900
  kho-inspect lab run --out lab-out --hops 2 --kernel 7.3+unpreserved \\
      --append "hugepagesz=1G hugepages=2 memblock=debug"
  kho-inspect lab run --out lab-out --hops 2 --stage-append n1="reserve_mem=64M:4K:late"
  kho-inspect lab run --out lab-out --memfd-size 256M --json > summary.json
\b
Command lines: n0 boots with the lab's line plus --append; each KHO boot keeps
kexec --reuse-cmdline. --stage-append words are added for that stage only: the
stage after it does not inherit them unless it is named again.
\b
Results: lab-out/summary.json, lab-out/serial.log, lab-out/n0, lab-out/n1, ...
Exit codes: 0 every stage verified, 1 a stage failed, 2 the lab could not run.
Real output: docs/examples/lab-run.txt.
"""

KERNELS_HELP = """\b
Kernels (--kernel):
  7.3                     Linux 7.3 from Debian's linux-source-7.3 (the default)
  7.3+unpreserved         7.3 with vm/patches/7.3+unpreserved: MEMBLOCK_KHO_UNPRESERVED
                          marks what the previous kernel did not preserve; boot-time
                          gigantic pages come from that memory only
  7.3+unpreserved-broken  the same kernel with kho_lab_hugetlb_in_scratch added to every
                          stage's command line: boot-time gigantic pages come from KHO
                          scratch (a deliberate bug, to see the checks fail)
  7.2                     Linux 7.2 from Debian's linux-source-7.2 (sid), without
                          INTEL_TDX_HOST: memblock is discarded after boot
  arm64/7.3               Linux 7.3 cross-built for arm64 (also: --arch arm64 --kernel 7.3),
                          booted as qemu-system-aarch64 -M virt -cpu max under TCG
"""

ARCH_HELP = ("The guest's architecture (default x86_64); with arm64, --kernel 7.3 means "
             "arm64/7.3.")

BUILD_EPILOG = """\b
Examples:
  kho-inspect lab build                  # build what is missing (cached in ~/.cache/kho-inspect)
  kho-inspect lab build --kernel 7.3 --kernel 7.3+unpreserved
  kho-inspect lab build --update-source  # look for a newer linux-source-7.3 first
  kho-inspect lab build --force --jobs 8
\b
A patched kernel builds incrementally from the plain 7.3 build tree (only what
depends on the patched files), or from scratch when 7.3 was not built here yet.
Real output: docs/examples/lab-build.txt.
""" + KERNELS_HELP

SHOW_EPILOG = """\b
Examples:
  kho-inspect lab show lab-out              # one screen: verdicts, checks, report directories
  kho-inspect lab show lab-out --all        # and every command's output of every stage
  kho-inspect lab show lab-out --stage n1 --command memblock
  kho-inspect lab show lab-out --json       # {"summary", "outputs": {stage: {command: ...}}}
  kho-inspect lab show lab-out --all --format markdown > lab-report.md
\b
Without --all, --stage or --command: the verdict, one row per stage (its check
summary), the report directories (nK/kho-inspect/report: report.md, report.json,
memory-map.svg) and where the details are. --stage and --command select outputs
as --all does. --json is always the whole run.
Real output: docs/examples/lab-show.txt.
"""


class LabLogHandler(logging.Handler):
    """Print lab log records on standard error: ``lab: ...``, ``guest: ...`` for the
    guest's console; kernel build progress as one status line on a terminal."""

    WIDTH = 110

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.status_open = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            label = "guest" if record.name == GUEST_LOGGER else "lab"
            text = f"{label}: {record.getMessage()}"
            if record.name == PROGRESS_LOGGER and _stderr_is_tty():
                click.echo("\r" + text[:self.WIDTH].ljust(self.WIDTH), nl=False, err=True)
                self.status_open = True
                return
            if self.status_open:
                click.echo("", err=True)
                self.status_open = False
            click.echo(text, err=True)
        except Exception:  # logging's contract: report, never raise
            self.handleError(record)


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def attach_log_handler() -> None:
    """Show the lab's INFO records (and, on a terminal, the live build status line)."""
    logger = logging.getLogger(LAB_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, LabLogHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(LabLogHandler())
    logger.setLevel(logging.INFO)
    logging.getLogger(PROGRESS_LOGGER).setLevel(
        logging.DEBUG if _stderr_is_tty() else logging.INFO)


@click.group(epilog=LAB_EPILOG)
def lab() -> None:
    """The kernel lab: a KHO kernel under QEMU that preserves memory and kexecs."""
    attach_log_handler()


@lab.command(epilog=BUILD_EPILOG)
@click.option("--kernel", "kernels", multiple=True, type=click.Choice(KERNEL_NAMES),
              help=f"The lab kernel to build (repeatable; default {PLAIN}; see below).")
@click.option("--arch", type=click.Choice(tuple(ARCHES)), default=None, help=ARCH_HELP)
@click.option("--update-source", is_flag=True,
              help="Look for a newer Debian source package of each kernel first.")
@click.option("--force", is_flag=True, help="Rebuild the kernel and the root filesystem.")
@click.option("--jobs", "-j", type=int, default=None, help="make -j (default: CPUs + 1).")
def build(kernels: Tuple[str, ...], arch: Optional[str], update_source: bool, force: bool,
          jobs: Optional[int]) -> None:
    """Build the lab kernels and the guest root filesystems if missing."""
    from kho_inspect.lab.kernel import ensure_kernel, lab_kernel
    from kho_inspect.lab.rootfs import ensure_guest_root

    names = kernels or (PLAIN,)
    lines, arches = [], []
    for name in names:
        lk = lab_kernel(name, arch)
        kernel = ensure_kernel(lk.name, update_source=update_source, jobs=jobs, force=force)
        update_source = False  # looked up once
        arches += [lk.arch] if lk.arch not in arches else []
        lines += [f"kernel   {lk.name}"] if len(names) > 1 else []
        lines += [f"{kernel.bzimage.name:<8} {kernel.bzimage}", f"vmlinux  {kernel.vmlinux}"]
    for a in arches:
        root = ensure_guest_root(a, force=force)
        lines.append(f"{'rootfs' if a == 'x86_64' else 'initrd':<8} {root.path}")
    click.echo("\n".join(lines))


@lab.command(epilog=RUN_EPILOG + KERNELS_HELP)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Artifacts directory (its previous lab results are replaced).")
@click.option("--kernel", "kernel", type=click.Choice(KERNEL_NAMES), default=None,
              help=f"The lab kernel to boot (default {PLAIN}; built if missing). "
                   "7.3+unpreserved-broken adds kho_lab_hugetlb_in_scratch to every "
                   "stage's command line (see below).")
@click.option("--arch", type=click.Choice(tuple(ARCHES)), default=None, help=ARCH_HELP)
@click.option("--kernel-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use this kernel build tree (bzImage + vmlinux) instead of a lab kernel.")
@click.option("--memory", default="6G", show_default=True, help="Guest RAM (QEMU -m).")
@click.option("--cpus", default=2, show_default=True, type=int, help="Guest CPUs.")
@click.option("--numa", default=0, show_default=True, type=int,
              help="Split the guest into N NUMA nodes (0: no NUMA topology).")
@click.option("--append", default="", help="Extra kernel command line for every kernel.")
@click.option("--hops", default=1, show_default=True, type=int, help="Number of KHO kexecs.")
@click.option("--accel", type=click.Choice(("auto", "kvm", "tcg")), default="auto",
              show_default=True, help="auto probes KVM with a short boot, else uses TCG.")
@click.option("--timeout", default=1800, show_default=True, type=float,
              help="Seconds for the whole VM run.")
@click.option("--cores", is_flag=True,
              help="Save DIR/nK/vmcore and host-side --qemu results at every stage.")
@click.option("--command", "commands", multiple=True,
              help="kho-inspect command to run per stage (repeatable; default: the lab's list).")
@click.option("--stage-append", "stage_append", multiple=True, metavar="STAGE=WORDS",
              help="Extra kernel command line for one stage only, e.g. "
                   'n1="reserve_mem=64M:4K:late" (repeatable).')
@click.option("--memfd-size", default="64M", show_default=True, metavar="SIZE",
              help="Size of the memfd each stage preserves through /dev/liveupdate.")
@click.option("--drgn-session", is_flag=True,
              help="In n1, also run drgn's CLI with kho-inspect's plugin (%memblock, %kho, "
                   "%kho_check): n1/drgn-session.txt. One more vmlinux load in the guest.")
@output_options
def run(out: Path, kernel: Optional[str], arch: Optional[str], kernel_dir: Optional[Path],
        memory: str, cpus: int,
        numa: int, append: str, hops: int, accel: str, timeout: float, cores: bool,
        commands: Tuple[str, ...], stage_append: Tuple[str, ...], memfd_size: str,
        drgn_session: bool, fmt: str) -> None:
    """Run the handover scenario: boot, preserve memory, kexec with KHO, inspect each kernel."""
    from kho_inspect.lab.results import problems, serial_tail
    from kho_inspect.lab.run import RunOptions, parse_stage_append, run_lab
    from kho_inspect.views.lab import run_section

    if kernel and kernel_dir:
        raise click.UsageError("--kernel and --kernel-dir are mutually exclusive")
    opts = RunOptions(out=out, kernel_dir=kernel_dir, kernel=kernel or PLAIN,
                      arch=arch, memory=memory,
                      cpus=cpus, numa=numa, append=append,
                      stage_append=parse_stage_append(stage_append), hops=hops, accel=accel,
                      timeout=timeout, cores=cores, memfd_size=memfd_size,
                      drgn_session=drgn_session)
    if commands:
        opts.commands = tuple(commands)
    summary = run_lab(opts)
    emit(fmt, summary, lambda: [run_section(summary, title=f"Lab run {out}")])
    if not summary["ok"]:
        click.echo(f"\nserial log tail ({out / 'serial.log'}):\n{serial_tail(out)}", err=True)
        for problem in problems(summary):
            click.echo(f"lab: FAILED: {problem}", err=True)
        raise click.exceptions.Exit(EXIT_VIOLATIONS)
    click.echo(f"\nlab: every stage verified; results in {out}", err=fmt == "json")


@lab.command(epilog=SHOW_EPILOG)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--stage", "stages", multiple=True, help="Only this stage (n0, n1, ...).")
@click.option("--command", "names", multiple=True,
              help="Only this command's output (memblock, kho-status, ...).")
@click.option("--all", "show_all", is_flag=True,
              help="Also print every command's output of every stage.")
@output_options
def show(out: Path, stages: Tuple[str, ...], names: Tuple[str, ...], show_all: bool,
         fmt: str) -> None:
    """Print a lab run's verdicts, check results and reports (--all: every output)."""
    from kho_inspect.lab.results import (
        problems,
        read_summary,
        show_json,
        stage_digest,
        stage_outputs,
    )
    from kho_inspect.views.lab import show_sections, summary_sections

    summary = read_summary(out)
    outputs = stage_outputs(out, summary, stages, names)
    if show_all or stages or names:
        sections = lambda: show_sections(summary, outputs, title=f"Lab run {out}")  # noqa: E731
    else:
        sections = lambda: summary_sections(  # noqa: E731
            summary, stage_digest(out, summary), out, problems(summary))
    emit(fmt, show_json(summary, outputs), sections)

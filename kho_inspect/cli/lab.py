"""``kho-inspect lab ...``: build the KHO kernel lab and run the handover scenario."""

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click
from tabulate import tabulate

from kho_inspect.errors import EXIT_VIOLATIONS, LabError

__all__ = ("lab",)

LAB_EPILOG = """\b
Examples:
  kho-inspect lab build                       # fetch linux-source-7.3, build kernel + rootfs
  kho-inspect lab run --out lab-out           # cold boot, one KHO kexec, kho-inspect in both
  kho-inspect lab run --out lab-out --hops 2 --memory 6G --cores \\
      --append "hugepagesz=1G hugepages=2 memblock=debug"
  kho-inspect lab run --out lab-out --kernel-dir ~/linux/build   # your own kernel tree
  kho-inspect lab show lab-out                # the verdicts and kho-inspect output per kernel
  kho-inspect --core lab-out/n1/vmcore --vmlinux KERNEL/vmlinux memblock
"""

RUN_EPILOG = """\b
Examples:
  kho-inspect lab run --out lab-out
  kho-inspect lab run --out lab-out --hops 2 --memory 6G --cores \\
      --append "hugepagesz=1G hugepages=2 memblock=debug"
  kho-inspect lab run --out lab-out --numa 2 --cpus 2 --accel tcg
  kho-inspect lab run --out lab-out --kernel-dir ~/linux/build --timeout 900
\b
Results: lab-out/summary.json, lab-out/serial.log, lab-out/n0, lab-out/n1, ...
Exit codes: 0 every stage verified, 1 a stage failed, 2 the lab could not run.
"""

BUILD_EPILOG = """\b
Examples:
  kho-inspect lab build                  # build what is missing (cached in ~/.cache/kho-inspect)
  kho-inspect lab build --update-source  # look for a newer linux-source-7.3 first
  kho-inspect lab build --force --jobs 8
"""

SHOW_EPILOG = """\b
Examples:
  kho-inspect lab show lab-out
  kho-inspect lab show lab-out --stage n1 --command memblock
"""


@click.group(epilog=LAB_EPILOG)
def lab() -> None:
    """The kernel lab: a KHO kernel under QEMU that preserves memory and kexecs."""


@lab.command(epilog=BUILD_EPILOG)
@click.option("--update-source", is_flag=True,
              help="Check trixie-backports for a newer linux-source-7.3 first.")
@click.option("--force", is_flag=True, help="Rebuild the kernel and the root filesystem.")
@click.option("--jobs", "-j", type=int, default=None, help="make -j (default: CPUs + 1).")
def build(update_source: bool, force: bool, jobs: Optional[int]) -> None:
    """Build the lab kernel and the guest root filesystem if missing."""
    from kho_inspect.lab.kernel import ensure_kernel
    from kho_inspect.lab.rootfs import ensure_rootfs

    kernel = ensure_kernel(update_source=update_source, jobs=jobs, force=force)
    rootfs = ensure_rootfs(force=force)
    click.echo(f"bzImage  {kernel.bzimage}\nvmlinux  {kernel.vmlinux}\nrootfs   {rootfs.path}")


@lab.command(epilog=RUN_EPILOG)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Artifacts directory (its previous lab results are replaced).")
@click.option("--kernel-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use this kernel build tree (bzImage + vmlinux) instead of the lab's.")
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
def run(out: Path, kernel_dir: Optional[Path], memory: str, cpus: int, numa: int, append: str,
        hops: int, accel: str, timeout: float, cores: bool, commands: Tuple[str, ...]) -> None:
    """Run the handover scenario: boot, preserve memory, kexec with KHO, inspect each kernel."""
    from kho_inspect.lab.run import RunOptions, run_lab, serial_tail

    opts = RunOptions(out=out, kernel_dir=kernel_dir, memory=memory, cpus=cpus, numa=numa,
                      append=append, hops=hops, accel=accel, timeout=timeout, cores=cores)
    if commands:
        opts.commands = tuple(commands)
    summary = run_lab(opts)
    click.echo(_stage_table(summary))
    if not summary["ok"]:
        click.echo(f"\nserial log tail ({out / 'serial.log'}):\n{serial_tail(out)}", err=True)
        for problem in _problems(summary):
            click.echo(f"lab: FAILED: {problem}", err=True)
        raise click.exceptions.Exit(EXIT_VIOLATIONS)
    click.echo(f"\nlab: every stage verified; results in {out}")


@lab.command(epilog=SHOW_EPILOG)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--stage", "stages", multiple=True, help="Only this stage (n0, n1, ...).")
@click.option("--command", "names", multiple=True,
              help="Only this command's output (memblock, kho-status, ...).")
def show(out: Path, stages: Tuple[str, ...], names: Tuple[str, ...]) -> None:
    """Print a lab run's verdicts and each stage's kho-inspect text output."""
    summary = _read_summary(out)
    click.echo(_stage_table(summary))
    for stage in summary["stages"]:
        if stages and stage not in stages:
            continue
        for path in sorted((out / stage / "kho-inspect").glob("*.txt")):
            if names and path.stem not in names:
                continue
            click.echo(f"\n##### {stage}: kho-inspect {path.stem.replace('-', ' ')}\n")
            click.echo(path.read_text().rstrip() or "(no output)")
            err = path.with_suffix(".txt.err")
            if err.is_file() and err.read_text().strip():
                click.echo(err.read_text().rstrip())


def _read_summary(out: Path) -> Dict[str, Any]:
    path = out / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LabError(f"{path} is missing or unreadable ({e}): run kho-inspect lab run "
                       f"--out {out} first.") from e


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _stage_table(summary: Dict[str, Any]) -> str:
    rows = []
    for name, st in summary["stages"].items():
        codes = " ".join(str(c) for c in st.get("commands", {}).values()) or "-"
        host = st.get("host") or {}
        host_codes = " ".join(str(c) for c in host.get("commands", {}).values()) or "-"
        rows.append([name, st.get("release") or "-", _yes_no(st.get("kho_boot")),
                     st.get("test_kho") or "-", _yes_no(st.get("memfd_verified")),
                     codes, host_codes, "yes" if st["verified"] else "NO"])
    head = (f"kernel {summary['bzImage']}\naccel {summary['accel']}, "
            f"{summary['memory_mib']} MiB, {summary['cpus']} CPUs, hops {summary['hops']}\n")
    return head + tabulate(rows, headers=["stage", "release", "KHO boot", "test_kho",
                                          "memfd", "exit codes", "host codes", "verified"])


def _problems(summary: Dict[str, Any]) -> list:
    out = list(summary.get("problems", []))
    for name, st in summary["stages"].items():
        out += [f"{name}: {p}" for p in st.get("problems", [])]
    return out

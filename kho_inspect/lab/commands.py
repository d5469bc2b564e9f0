# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Stage commands
--------------

The kho-inspect commands a lab stage runs, as the lab hands them to the batch
runner (:mod:`kho_inspect.cli.batch`): the default lists, the file name each
command's output gets, the placeholders a command may use, and the command
line that starts a batch. This module only builds strings; it never imports
the CLI.

A command is the text after ``kho-inspect`` and its target options
(``kho preserved --from reserved --json``). It may name the run's directories
through placeholders, expanded where the command runs (the guest sees the run
directory as ``/lab/out``, the host as ``DIR``):

``{out}``
    the run directory
``{stage}``, ``{stage_dir}``
    this stage's name (``n1``) and directory
``{previous}``, ``{previous_dir}``
    the stage before (valid from ``n1`` on), for commands that compare with
    what the previous kernel saved
``{results}``
    the directory the command's batch writes its outputs to:
    ``nK/kho-inspect`` in the guest, ``nK/host`` on the host (a command that
    writes files of its own, such as ``report -o {results}/report``, keeps the
    guest's and the host's apart)
"""

import re
import shlex
import sys
from pathlib import PurePath
from typing import Dict, List, Optional, Sequence, Tuple, Union

from kho_inspect.errors import LabError

__all__ = (
    "DEFAULT_COMMANDS",
    "KHO_BOOT_COMMANDS",
    "BEFORE_KEXEC_COMMANDS",
    "BATCH_MODULE",
    "PLACEHOLDERS",
    "GUEST_RESULTS",
    "HOST_RESULTS",
    "command_name",
    "stage_index",
    "placeholders",
    "expand",
    "batch_argv",
)

# The kho-inspect commands every lab stage runs (in the guest and, with --cores, on the host).
DEFAULT_COMMANDS: Tuple[str, ...] = (
    "memblock --json",
    "kho status --json",
    "kho scratch --json",
    "kho preserved --json",
    "kho fdt --json",
    "hugetlb --json",
    "bootlog --dmesg --json",
)
# Commands run only in a kernel that was KHO-booted (n1, n2, ...): the sources valid
# in kernel N+1, and anything that compares with the stage before ({previous_dir}).
# The report (report.md, report.json, memory-map.svg) runs in the same batch as the
# other commands, on the program they already loaded.
KHO_BOOT_COMMANDS: Tuple[str, ...] = (
    "kho preserved --from reserved --json",
    "kho preserved --from pages --json",
    "check --previous {previous_dir}/snapshot.json --dmesg --json",
    "report -o {results}/report --previous {previous_dir}/snapshot.json --dmesg",
)
# Commands run in the guest as the last thing before ``kexec -e`` (after ``kexec -l``),
# in every stage that kexecs; their outputs go to ``nK/before-kexec/``.
# The snapshot the next stage's ``check --previous`` reads: taken as late as possible.
BEFORE_KEXEC_COMMANDS: Tuple[str, ...] = ("snapshot -o {stage_dir}/snapshot.json",)
BATCH_MODULE = "kho_inspect.cli.batch"
PLACEHOLDERS = ("out", "stage", "stage_dir", "previous", "previous_dir", "results")
# The batch output directories of a stage: the guest's commands, the host's (--cores).
GUEST_RESULTS = "kho-inspect"
HOST_RESULTS = "host"
# Output options (and whether they take a value) left out of a command's file name.
OUTPUT_OPTIONS = {"--json": False, "--format": True}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
_STAGE = re.compile(r"n(\d+)")

PathLike = Union[str, PurePath]


def command_name(command: str) -> str:
    """File name stem of a command: its words and option values, without the output
    options and without paths (words with a ``/``), so that a command has the same name
    in the guest, on the host and on a core whatever directories it names.

    >>> command_name("kho scratch --json")
    'kho-scratch'
    >>> command_name("kho preserved --from pages --format json")
    'kho-preserved-from-pages'
    >>> command_name("check --previous /lab/out/n0/snapshot.json --json")
    'check-previous'
    """
    words = []
    skip = False
    for word in shlex.split(command):
        if skip:
            skip = False
            continue
        if word in OUTPUT_OPTIONS:
            skip = OUTPUT_OPTIONS[word]
            continue
        if "/" in word:
            continue
        words.append(re.sub(r"[^A-Za-z0-9_.]+", "-", word).strip("-"))
    return "-".join(w for w in words if w) or "command"


def stage_index(stage: str) -> int:
    """``3`` for ``n3``.

    :raises LabError: ``stage`` is not a stage name.
    """
    m = _STAGE.fullmatch(stage)
    if not m:
        raise LabError(f"{stage!r} is not a lab stage: stages are named n0, n1, n2, ...")
    return int(m.group(1))


def placeholders(out: PathLike, stage: str,
                 results: Optional[PathLike] = None) -> Dict[str, str]:
    """The placeholder values of ``stage`` for a run directory seen as ``out``;
    ``results`` is the batch's output directory (default: the guest's)."""
    index = stage_index(stage)
    stage_dir = PurePath(out) / stage
    values = {"out": str(out), "stage": stage, "stage_dir": str(stage_dir),
              "results": str(results if results is not None else stage_dir / GUEST_RESULTS)}
    if index > 0:
        values["previous"] = f"n{index - 1}"
        values["previous_dir"] = str(PurePath(out) / values["previous"])
    return values


def expand(commands: Sequence[str], out: PathLike, stage: str,
           results: Optional[PathLike] = None) -> List[str]:
    """``commands`` with their placeholders filled in for ``stage`` of a run in ``out``,
    outputs in ``results`` (default: the guest's ``nK/kho-inspect``).

    >>> expand(["check --previous {previous_dir}/snapshot.json"], "/lab/out", "n2")
    ['check --previous /lab/out/n1/snapshot.json']
    >>> expand(["report -o {results}/report"], "/lab/out", "n1")
    ['report -o /lab/out/n1/kho-inspect/report']

    :raises LabError: a command names an unknown placeholder, or ``{previous...}`` in n0.
    """
    values = placeholders(out, stage, results)

    def fill(m: "re.Match[str]") -> str:
        name = m.group(1)
        if name in values:
            return shlex.quote(values[name])  # the command is split with shlex
        if name in PLACEHOLDERS:
            raise LabError(f"{stage} has no stage before it: {m.group(0)} can only be used "
                           "in a command of a KHO boot (n1 on).")
        raise LabError(f"{m.group(0)} is not a lab command placeholder: use one of "
                       + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + ".")

    return [_PLACEHOLDER.sub(fill, command) for command in commands]


def batch_argv(outdir: PathLike, commands: Sequence[str], global_args: Sequence[str],
               python: str = sys.executable) -> List[str]:
    """The command line that runs ``commands`` (already expanded) in one batch process,
    results in ``outdir``; ``global_args`` go before each command (``--qemu SOCK``)."""
    argv = [python, "-m", BATCH_MODULE, "--out", str(outdir)]
    for command in commands:
        argv += ["--command", command]
    return [*argv, "--", *global_args]

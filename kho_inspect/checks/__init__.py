# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Checks
------

The ``kho_inspect.checks`` package holds the placement rules of
``kho-inspect check``: pure functions from model objects (a
:class:`~kho_inspect.model.snapshot.Snapshot` of the running kernel, the one
the previous kernel saved before it kexec'd, a parsed boot log) to findings
(:class:`~kho_inspect.model.check.CheckReport`). Nothing here imports drgn or
touches a file, so each rule is tested from plain data.

One module per concept: :mod:`~kho_inspect.checks.activation` (is KHO on),
:mod:`~kho_inspect.checks.chain` (the metadata linking the kernels),
:mod:`~kho_inspect.checks.scratch` (scratch areas and extended scratch),
:mod:`~kho_inspect.checks.preserved` (the preserved memory and its radix
tree), :mod:`~kho_inspect.checks.placement` (kexec segments and early boot
allocations), :mod:`~kho_inspect.checks.hugetlb` (gigantic pages) and
:mod:`~kho_inspect.checks.memblock` and :mod:`~kho_inspect.checks.trace` (a
saved run of ``kho-inspect trace``). The catalogue (:func:`catalogue`) is in
that order; docs/kernel/invariants.md has one section per rule id.
"""

from typing import Iterable, List, Optional

from kho_inspect.checks import (  # noqa: F401  (importing registers the rules)
    activation,
    chain,
    hugetlb,
    memblock,
    placement,
    preserved,
    scratch,
    trace,
)
from kho_inspect.checks.context import Context
from kho_inspect.checks.registry import RULES, Rule, Skip
from kho_inspect.errors import InputError
from kho_inspect.model.bootlog import BootLog
from kho_inspect.model.check import CheckReport, RuleInfo, RuleResult
from kho_inspect.model.snapshot import Snapshot
from kho_inspect.model.trace import TraceRun

__all__ = ("RULES", "catalogue", "run_checks", "run_rule", "select_rules")

# The catalogue order: what a reader meets first is whether KHO works at all.
_ORDER = ("activation", "chain", "scratch", "preserved", "placement", "hugetlb", "memblock",
          "trace")


def _ordered() -> List[Rule]:
    def key(item: Rule) -> int:
        return _ORDER.index(item.func.__module__.rsplit(".", 1)[1])

    return sorted(RULES.values(), key=key)


def catalogue() -> List[RuleInfo]:
    """Every rule's id, statement, guarantee, docs anchor and needs, in order."""
    return [r.info for r in _ordered()]


def select_rules(only: Optional[Iterable[str]] = None) -> List[Rule]:
    """The rules to run: all, or those named in ``only`` (in catalogue order).

    :raises InputError: a name that is no rule id.
    """
    rules = _ordered()
    if only is None:
        return rules
    wanted = list(only)
    for name in wanted:
        if name not in RULES:
            raise InputError(f"There is no rule {name!r}", given="rule", name=name,
                             available=[r.info.id for r in rules])
    return [r for r in rules if r.info.id in wanted]


def run_rule(item: Rule, ctx: Context) -> RuleResult:
    """Run one rule: pass without evidence, fail with it, skip with the reason."""
    try:
        outcome = item.func(ctx)
    except Skip as skip:
        return RuleResult(item.info, "skip", skip.reason)
    status = "fail" if outcome.evidence else "pass"
    return RuleResult(item.info, status, outcome.checked, outcome.evidence)


def run_checks(current: Snapshot, previous: Optional[Snapshot] = None,
               bootlog: Optional[BootLog] = None,
               only: Optional[Iterable[str]] = None,
               traced: Optional[TraceRun] = None) -> CheckReport:
    """Judge ``current`` (and its handover from ``previous``) by every rule.

    :param current: the kernel checked, usually the running one (N+1).
    :param previous: the snapshot kernel N saved right before ``kexec -e``.
    :param bootlog: ``current``'s boot log parsed by
        :func:`kho_inspect.bootlog.parse_bootlog`.
    :param only: rule ids to run (all if ``None``).
    :param traced: a saved ``kho-inspect trace`` run on ``current``.
    :raises InputError: ``only`` names a rule that does not exist.
    """
    ctx = Context(current, previous, bootlog, traced)
    results = tuple(run_rule(item, ctx) for item in select_rules(only))
    return CheckReport(
        results=results,
        release=current.release,
        previous=previous.release if previous is not None else None,
        generation=current.generation,
    )

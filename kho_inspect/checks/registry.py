# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Rule registry
-------------

The ``kho_inspect.checks.registry`` module holds the catalogue of rules.
A rule is a pure function from a :class:`~kho_inspect.checks.context.Context`
to an :class:`Outcome` (the offending objects and what was checked),
registered with :func:`rule` together with its stable id, its one-line
statement and the kernel code that guarantees it. A rule that cannot judge
raises :class:`Skip` with the reason.

Rules are registered in the order their modules are imported by
:mod:`kho_inspect.checks`, which is the catalogue order.
"""

from typing import Callable, Dict, Sequence, Tuple

from kho_inspect.frozen import frozen
from kho_inspect.model.check import Evidence, RuleInfo

__all__ = ("DOCS", "RULES", "Outcome", "Rule", "Skip", "rule")

DOCS = "docs/kernel/invariants.md"
"""Where every rule is explained; each rule's section has the rule id as anchor."""


class Skip(Exception):
    """A rule cannot be judged; the message says why (one sentence)."""

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else ""


@frozen
class Outcome:
    """What a rule found: no evidence is a pass.

    :param evidence: every offending object.
    :param checked: what was looked at, in words ("12 preserved ranges
        against 3 scratch areas").
    """

    evidence: Tuple[Evidence, ...]
    checked: str

    @classmethod
    def of(cls, evidence: Sequence[Evidence], checked: str) -> "Outcome":
        return cls(tuple(evidence), checked)


RuleFunc = Callable[..., Outcome]


@frozen
class Rule:
    """A registered rule: its catalogue entry and its function."""

    info: RuleInfo
    func: RuleFunc


RULES: Dict[str, Rule] = {}
"""Every rule by id, in catalogue order."""


def rule(id: str, statement: str, guarantee: str, needs: Sequence[str] = (),
         applies: str = "every kernel") -> Callable[[RuleFunc], RuleFunc]:
    """Register the decorated function as rule ``id``.

    :param guarantee: ``file:line`` references into Linux 7.3 and what each does.
    :param needs: what the rule reads besides the running kernel's snapshot
        (``"previous"``, ``"bootlog"``, ``"memblock"``, ``"hugetlb"``, ...).
    :raises ValueError: the id is taken.
    """

    def register(func: RuleFunc) -> RuleFunc:
        if id in RULES:
            raise ValueError(f"rule {id!r} is registered twice")
        info = RuleInfo(id=id, statement=statement, guarantee=guarantee,
                        docs=f"{DOCS}#{id}", needs=tuple(needs), applies=applies)
        RULES[id] = Rule(info, func)
        return func

    return register

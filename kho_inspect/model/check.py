# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Check findings
--------------

The ``kho_inspect.model.check`` module holds what ``kho-inspect check``
finds: one :class:`RuleResult` per rule (pass, fail with :class:`Evidence`, or
skip with the reason) gathered in a :class:`CheckReport`, and
:class:`RuleInfo`, a rule's catalogue entry (``check --list``).

The JSON form is ``{"rules": [{"id", "status", "statement", "guarantee",
"evidence", "reason", ...}], "summary": {...}}``; the exit status of a run
(0 when every rule that ran passed, 1 when any failed) is a property of the
report. Nothing here touches drgn; every class round-trips through JSON.
"""

from typing import Any, Dict, Mapping, Optional, Tuple

from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel, to_json
from kho_inspect.ranges import Range

__all__ = (
    "CHECK_SCHEMA",
    "CHECK_VERSION",
    "STATUSES",
    "CheckReport",
    "Evidence",
    "RuleInfo",
    "RuleResult",
)

CHECK_SCHEMA = "kho-inspect/check"
CHECK_VERSION = 1

STATUSES = ("pass", "fail", "skip")

EXIT_OK = 0
EXIT_FAILED = 1


@frozen
class Evidence:
    """One offending object of a failed rule.

    :param what: what is wrong, in one sentence.
    :param range: the physical range at fault, if the finding has one.
    :param owner: what the range belongs to (``"hugetlb boot page, node 0"``,
        ``"kho_scratch[1] (global)"``, ``"reserve_mem 'foo'"``).
    :param klass: the scratch class the range lies in (``"original"``,
        ``"extended"``, ``"unpreserved"``, ``"other"``, ``"partly a+b"``);
        ``class`` in JSON.
    :param flags: ``enum memblock_flags`` names of the memory and reserved
        regions under the range (empty where memblock is not kept).
    :param expected: the value a rule expected, where it compares values.
    :param found: the value it found.
    :param lines: kernel log lines that explain the finding.
    """

    what: str
    range: Optional[Range] = None
    owner: Optional[str] = None
    klass: Optional[str] = None
    flags: Tuple[str, ...] = ()
    expected: Any = None
    found: Any = None
    lines: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {
            "what": self.what,
            "range": None if self.range is None else self.range.to_json(),
            "owner": self.owner,
            "class": self.klass,
            "flags": list(self.flags),
            "expected": to_json(self.expected),
            "found": to_json(self.found),
            "lines": list(self.lines),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Evidence":
        rng = obj.get("range")
        return cls(
            what=str(obj["what"]),
            range=None if rng is None else Range.from_json(rng),
            owner=obj.get("owner"),
            klass=obj.get("class"),
            flags=tuple(obj.get("flags", ())),
            expected=_plain(obj.get("expected")),
            found=_plain(obj.get("found")),
            lines=tuple(obj.get("lines", ())),
        )


def _plain(value: Any) -> Any:
    # JSON lists come back as tuples, so a round trip compares equal.
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


@frozen
class RuleInfo(JsonModel):
    """A rule's catalogue entry.

    :param id: stable identifier (``"scratch-inherited"``).
    :param statement: the invariant in one line.
    :param guarantee: the kernel code that guarantees it (``file:line`` in
        Linux 7.3).
    :param docs: where docs/kernel/invariants.md explains it.
    :param needs: what the rule reads beyond the running kernel's state:
        ``"previous"``, ``"bootlog"``, ``"memblock"``, ``"hugetlb"``, ...
    :param applies: the kernels or boots it applies to, in words.
    """

    id: str
    statement: str
    guarantee: str
    docs: str
    needs: Tuple[str, ...] = ()
    applies: str = "every kernel"


@frozen
class RuleResult:
    """The outcome of one rule on one kernel.

    :param status: ``"pass"``, ``"fail"`` or ``"skip"``.
    :param reason: for a skip, why it could not be judged; for a pass or a
        fail, what was checked (``"12 preserved ranges against 3 areas"``).
    :param evidence: for a fail, every offending object.
    """

    info: RuleInfo
    status: str
    reason: str = ""
    evidence: Tuple[Evidence, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    @property
    def id(self) -> str:
        return self.info.id

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.info.id,
            "status": self.status,
            "statement": self.info.statement,
            "guarantee": self.info.guarantee,
            "evidence": [e.to_json() for e in self.evidence],
            "reason": self.reason,
            "docs": self.info.docs,
            "needs": list(self.info.needs),
            "applies": self.info.applies,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "RuleResult":
        info = RuleInfo(
            id=str(obj["id"]),
            statement=str(obj["statement"]),
            guarantee=str(obj["guarantee"]),
            docs=str(obj.get("docs", "")),
            needs=tuple(obj.get("needs", ())),
            applies=str(obj.get("applies", "every kernel")),
        )
        return cls(info, str(obj["status"]), str(obj.get("reason", "")),
                   tuple(Evidence.from_json(e) for e in obj.get("evidence", ())))


@frozen
class CheckReport:
    """Every rule's result on one kernel, in catalogue order.

    :param release: the kernel checked (``UTS_RELEASE``).
    :param previous: the release of the ``--previous`` snapshot, if any.
    :param generation: the kernel generation the rules judged by
        (:attr:`kho_inspect.model.snapshot.Snapshot.generation`).
    """

    results: Tuple[RuleResult, ...]
    release: Optional[str] = None
    previous: Optional[str] = None
    generation: Optional[str] = None

    def by_status(self, status: str) -> Tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.status == status)

    def get(self, rule_id: str) -> RuleResult:
        """The result of ``rule_id``.

        :raises KeyError: the report has no such rule.
        """
        for result in self.results:
            if result.id == rule_id:
                return result
        raise KeyError(rule_id)

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.results)

    @property
    def exit_status(self) -> int:
        """0 when every rule that ran passed, 1 when any failed."""
        return EXIT_FAILED if self.failed else EXIT_OK

    def summary(self) -> Dict[str, Any]:
        counts = {s: len(self.by_status(s)) for s in STATUSES}
        return {
            **counts,
            "total": len(self.results),
            "failed": [r.id for r in self.by_status("fail")],
            "exit_status": self.exit_status,
            "release": self.release,
            "previous": self.previous,
            "generation": self.generation,
        }

    def to_json(self) -> Dict[str, Any]:
        return {"rules": [r.to_json() for r in self.results], "summary": self.summary()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "CheckReport":
        summary = obj.get("summary", {})
        return cls(
            results=tuple(RuleResult.from_json(r) for r in obj["rules"]),
            release=summary.get("release"),
            previous=summary.get("previous"),
            generation=summary.get("generation"),
        )


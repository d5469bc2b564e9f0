# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every rule of ``check`` has its section in docs/kernel/invariants.md (its ``docs`` link)."""

import re
from pathlib import Path

from kho_inspect.checks import catalogue

DOC = Path(__file__).resolve().parents[1] / "docs" / "kernel" / "invariants.md"


def _anchors(text: str) -> set:
    # GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens.
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_rule_has_a_section() -> None:
    anchors = _anchors(DOC.read_text())
    rules = catalogue()
    assert len(rules) >= 15
    missing = [r.id for r in rules if r.id not in anchors]
    assert not missing, f"docs/kernel/invariants.md lacks headings for {missing}"
    for r in rules:
        assert r.docs.endswith(f"invariants.md#{r.id}"), r.docs


def test_catalogue_page_is_current() -> None:
    """docs/checks.md is what ``check --list --format markdown`` prints (regenerate it:
    see its first lines)."""
    import io
    from contextlib import redirect_stdout

    from kho_inspect.cli import run

    out = io.StringIO()
    with redirect_stdout(out):
        assert run(["check", "--list", "--format", "markdown"]) == 0
    page = (DOC.parents[1] / "checks.md").read_text()
    assert page.endswith(out.getvalue()), "docs/checks.md is stale: regenerate it"

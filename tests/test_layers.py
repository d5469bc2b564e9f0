# SPDX-License-Identifier: LGPL-2.1-or-later
"""The layers of kho_inspect: imports only point down, and nothing imports in a circle.

The import graph is read from the source with :mod:`ast`: every ``import``
and ``from ... import`` statement counts, at module level and inside
functions alike (a function-local import is still a dependency, and still a
cycle when the other module imports back). The layer order is the one in
docs/layers.md; keep the two the same.
"""

import ast
from functools import cache
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kho_inspect"

LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    # (layer, modules): a name ending in ".*" is a package and everything in it.
    ("foundation", ("kho_inspect", "kho_inspect.errors", "kho_inspect.ranges",
                    "kho_inspect.frozen")),
    ("codecs", ("kho_inspect.radix", "kho_inspect.fdt", "kho_inspect.kdump")),
    ("model", ("kho_inspect.model.*",)),
    ("checks", ("kho_inspect.checks.*", "kho_inspect.bootlog", "kho_inspect.diff",
                "kho_inspect.activation")),
    ("render", ("kho_inspect.render", "kho_inspect.redact")),
    ("views", ("kho_inspect.views.*", "kho_inspect.report.*")),
    ("target", ("kho_inspect.target",)),
    ("walkers", ("kho_inspect.records", "kho_inspect.memblock", "kho_inspect.kho",
                 "kho_inspect.kho_fdt", "kho_inspect.kho_status", "kho_inspect.pageblock",
                 "kho_inspect.buddy", "kho_inspect.scratch", "kho_inspect.preserved",
                 "kho_inspect.hugetlb", "kho_inspect.printk", "kho_inspect.snapshot",
                 "kho_inspect.diagnosis", "kho_inspect.tracing")),
    ("lab", ("kho_inspect.lab.*",)),
    ("cli", ("kho_inspect.cli.*", "kho_inspect.__main__")),
    ("plugins", ("kho_inspect.drgn_plugin",)),
)
"""Low to high: a module may import its own layer and the layers before it."""

NO_DRGN = ("model", "checks", "render", "views", "cli", "foundation", "codecs")
"""Layers that never import drgn: only the target and the walkers read a kernel."""

WALKERS_DO_NOT_IMPORT = ("render", "views", "cli")
"""Walkers return model objects; what to show is not theirs to decide."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> Optional[str]:
    for layer, names in LAYERS:
        for name in names:
            if name.endswith(".*"):
                if module == name[:-2] or module.startswith(name[:-1]):
                    return layer
            elif module == name:
                return layer
    return None


RANK = {layer: i for i, (layer, _) in enumerate(LAYERS)}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def imports(module: str) -> List[Tuple[str, int, bool]]:
    """``(imported module, line, at run time)`` for every import in ``module``.

    Imports of this package resolve to the most specific module that exists
    (``from kho_inspect.model import base`` is ``kho_inspect.model.base``);
    other imports keep their top-level name (``drgn``). An import under ``if
    TYPE_CHECKING:`` is not made at run time.
    """
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    typing_only: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out = []
    for node in ast.walk(tree):
        runtime = id(node) not in typing_only
        if isinstance(node, ast.Import):
            out += [(_target(a.name), node.lineno, runtime) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in MODULES else _target(base), node.lineno, runtime))
    return out


def _target(name: str) -> str:
    if not name.startswith("kho_inspect"):
        return name.split(".")[0]
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


GRAPH: Dict[str, Set[str]] = {
    m: {t for t, _, _ in imports(m) if t in MODULES and t != m} for m in MODULES
}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"add these modules to LAYERS (and docs/layers.md): {missing}"


def cycle_from(graph: Dict[str, Set[str]], start: str) -> Optional[List[str]]:
    """A path of imports from ``start`` back to itself, or ``None``."""
    stack: List[Tuple[str, List[str]]] = [(start, [start])]
    seen: Set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_import_cycles():
    cycles = {tuple(c) for c in (cycle_from(GRAPH, m) for m in MODULES) if c}
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in sorted(cycles))


def _edges(where) -> List[str]:
    return [f"{m}:{line} imports {t}" for m in MODULES for t, line, runtime in imports(m)
            if where(m, t, runtime)]


def test_imports_only_point_down():
    def upward(m: str, t: str, runtime: bool) -> bool:
        lm, lt = layer_of(m), layer_of(t)
        return t in MODULES and lm is not None and lt is not None and RANK[lt] > RANK[lm]

    bad = _edges(upward)
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_only_target_and_walkers_import_drgn():
    bad = _edges(lambda m, t, runtime: runtime and t in ("drgn", "_drgn")
                 and layer_of(m) in NO_DRGN)
    assert not bad, "drgn imported outside the target and the walkers:\n" + "\n".join(bad)


def test_walkers_do_not_import_views_render_or_cli():
    bad = _edges(lambda m, t, runtime: layer_of(m) == "walkers" and t in MODULES
                 and layer_of(t) in WALKERS_DO_NOT_IMPORT)
    assert not bad, "walkers that decide what to show:\n" + "\n".join(bad)


# --- the checker itself ---------------------------------------------------------


@pytest.mark.parametrize("module, layer", [
    ("kho_inspect", "foundation"), ("kho_inspect.model", "model"),
    ("kho_inspect.model.scratch", "model"), ("kho_inspect.scratch", "walkers"),
    ("kho_inspect.cli", "cli"), ("kho_inspect.views.scratch", "views"),
])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_function_local_imports_are_edges():
    # kho_inspect.snapshot imports the hugetlb walker inside a function.
    assert "kho_inspect.hugetlb" in GRAPH["kho_inspect.snapshot"]
    assert "kho_inspect.model.base" in GRAPH["kho_inspect.model"]


def test_lazy_subcommands_are_cli_modules():
    # The CLI imports its subcommands by name when one runs (cli.COMMANDS): edges the
    # import graph cannot see, so they must stay inside the cli layer.
    from kho_inspect.cli import COMMANDS

    for target in COMMANDS.values():
        module = target.split(":")[0]
        assert module.startswith("kho_inspect.cli.") and module in GRAPH, target


def test_cycle_finder_finds_a_cycle_through_several_modules():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set()}
    assert cycle_from(graph, "a") == ["a", "b", "c", "a"]
    assert cycle_from(graph, "d") is None


def test_imports_are_read_with_their_kind():
    # kho_inspect.cli.session imports drgn for a type annotation only.
    found = {(t, runtime) for t, _, runtime in imports("kho_inspect.cli.session")}
    assert ("drgn", False) in found and ("kho_inspect.target", True) in found

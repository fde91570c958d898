"""The rules docs/architecture.md states for the package's layout, read from the source: no import cycle, the
shared core never imports a workflow, every module says what it holds in a docstring and stays under 450 lines,
and function-level imports only where the map allows them."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simulator"
MAX_LINES = 450
CORE = ("scenario", "cost", "moe", "schedules")
WORKFLOWS = ("training", "serving", "whatif", "output")
LAZY_IMPORTS = {"simulator.cli", "simulator.entry", "simulator", "simulator.simulate"}  # the map's exceptions


def modules() -> dict[str, Path]:
    """Dotted name -> path of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, tree: ast.Module) -> list[tuple[str, bool]]:
    """(module imported, at function level?) for each import of `tree` inside the package (runtime imports only:
    `if TYPE_CHECKING` blocks are skipped)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            return
        nested = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("simulator"):
                found.extend((f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, in_function)
                             for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((a.name, in_function) for a in node.names if a.name.startswith("simulator"))
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(tree, False)
    return found


MODULES = modules()
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
IMPORTS = {name: imported(name, MODULES[name], tree) for name, tree in TREES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short_and_says_what_it_holds(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines"
    if MODULES[name].stat().st_size:
        assert ast.get_docstring(TREES[name]), f"{name} has no docstring"


def test_no_import_cycle():
    graph = nx.DiGraph((a, b) for a, deps in IMPORTS.items() for b, lazy in deps if not lazy and b in MODULES)
    assert graph.number_of_edges() > 200  # the reader sees the package's imports
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, cycles[:3]


def test_the_core_never_imports_a_workflow():
    bad = [(a, b) for a, deps in IMPORTS.items() if a.split(".")[1:2] and a.split(".")[1] in CORE
           for b, _ in deps if b.split(".")[1:2] and b.split(".")[1] in WORKFLOWS]
    assert not bad, bad


def test_function_level_imports_only_where_the_map_allows():
    bad = sorted({a for a, deps in IMPORTS.items() for _, lazy in deps if lazy} - LAZY_IMPORTS)
    assert not bad, bad


def test_the_rules_can_fail():
    """The readers see what they check: a cycle and a lazy import in made-up source are found."""
    tree = ast.parse("import simulator.cost.ops\ndef f():\n    from .ops import OpTable\n")
    found = imported("simulator.cost.roofline", PACKAGE / "cost" / "roofline.py", tree)
    assert ("simulator.cost.ops", False) in found and ("simulator.cost.ops.OpTable", True) not in found
    assert any(lazy for _, lazy in found)

"""The layout holds: the import-linter contracts pass, no module imports itself through others, and modules stay a
size a newcomer can read (README, "How it is built")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("support_bot", "ingest", "web")
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300
# A module or class may pass the limit only when its docstring says why, in a sentence starting with this.
SIZE_REASON = "Longer than the usual limit because"


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every group of modules that import each other through any chain (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:
        # Iterative, so a deep import chain cannot hit the recursion limit.
        nonlocal counter
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or graph.direct_import_exists(importer=node, imported=node):
                    cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_the_cycle_finder_finds_a_cycle_and_passes_a_chain():
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c", "d"):
        graph.add_module(name)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    assert import_cycles(graph) == []
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="d", imported="a")
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_itself_through_others():
    # Lazy imports inside functions count too: they are cycles waiting for the first call.
    graph = grimp.build_graph(*PACKAGES)
    assert len(graph.modules) > 50
    assert import_cycles(graph) == []


def test_the_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    # lint-imports exits non-zero when any contract is broken, and names each broken import in its report.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def _oversized() -> list[str]:
    found = []
    for path in _python_files():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        name = path.relative_to(REPO)
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES and SIZE_REASON not in (ast.get_docstring(tree) or ""):
            found.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES and SIZE_REASON not in (ast.get_docstring(node) or ""):
                    found.append(f"{name}: class {node.name} is {size} lines")
    return found


def test_modules_and_classes_stay_readable():
    assert _oversized() == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_it_is_for(package):
    missing = [
        str(init.relative_to(REPO))
        for init in (REPO / package).rglob("__init__.py")
        if not ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    ]
    assert missing == []

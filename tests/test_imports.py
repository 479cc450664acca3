"""The module import graph: no cycles, and packages import only what DESIGN.md's table allows.

Every module of the seven packages is parsed with ``ast`` (nothing is imported), and every
``import``/``from … import`` is an edge, wherever it stands: at module level, inside a function,
under ``if TYPE_CHECKING``. A function-level import hides a cycle from Python's import machinery
at load time, not from the design, so it counts like any other.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: DESIGN.md, "Top-level packages": what each package may import of ours.
ALLOWED: dict[str, frozenset[str]] = {
    "workloads": frozenset(),
    "dataflows": frozenset({"workloads"}),
    "archsim": frozenset({"workloads", "dataflows"}),
    "rtl": frozenset({"workloads", "dataflows"}),
    "verification": frozenset({"workloads", "dataflows", "archsim", "rtl"}),
    "baselines": frozenset({"workloads"}),
    "reports": frozenset({"workloads", "dataflows", "archsim", "baselines"}),
}

#: Modules that may import any package from inside a function (never at module level): the CLI
#: dispatches to every command, but loading it must not load them.
LAZY_ANYTHING = frozenset({"archsim.cli"})

#: Cycles tolerated, as sets of modules: none.
ALLOWED_CYCLES: list[frozenset[str]] = []


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.source}:{self.line} -> {self.target}{where}"


def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of our packages."""
    modules = {}
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` (a module, or a name inside one) belongs to; None if not ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


class _Imports(ast.NodeVisitor):
    """Collects (imported name, line, inside a function) of one module."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int, bool]] = []
        self._depth = 0

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package.pop()
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        self.found.append((base, node.lineno, self._depth > 0))
        # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` resolves
        # back to mod.
        for alias in node.names:
            self.found.append((f"{base}.{alias.name}", node.lineno, self._depth > 0))


def import_graph() -> tuple[dict[str, Path], list[Edge]]:
    """All modules and every edge between two of them (self-imports dropped, duplicates kept
    once per source line)."""
    modules = _modules()
    edges: dict[tuple[str, str, int], Edge] = {}
    for module, path in modules.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for name, line, in_function in visitor.found:
            target = _resolve(name, modules)
            if target is not None and target != module:
                edges.setdefault((module, target, line), Edge(module, target, line, in_function))
    return modules, list(edges.values())


def cycles(nodes: list[str], edges: list[Edge]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        succ[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(succ[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_graph_sees_every_kind_of_import():
    """Guards the test itself: modules are found, and function-level imports become edges."""
    modules, edges = import_graph()
    assert {"workloads.spec", "dataflows.scheduler", "archsim.cli", "rtl.top"} <= set(modules)
    lazy = {(e.source, e.target) for e in edges if e.in_function}
    assert ("archsim.cli", "baselines.compare") in lazy


def test_no_import_cycles():
    modules, edges = import_graph()
    problems = []
    for component in cycles(sorted(modules), edges):
        if component in ALLOWED_CYCLES:
            continue
        inside = sorted(str(e) for e in edges if e.source in component and e.target in component)
        problems.append(f"cycle among {', '.join(sorted(component))}:\n    "
                        + "\n    ".join(inside))
    assert not problems, (
        "import cycles (function-level imports count; move the shared part to the lower "
        "module instead):\n" + "\n".join(problems))


def test_packages_import_what_design_md_allows():
    _, edges = import_graph()
    bad = []
    for e in sorted(edges, key=lambda e: (e.source, e.line, e.target)):
        source, target = e.source.split(".")[0], e.target.split(".")[0]
        if source == target or target in ALLOWED[source]:
            continue
        if e.source in LAZY_ANYTHING and e.in_function:
            continue
        may = ", ".join(sorted(ALLOWED[source])) or "nothing of ours"
        bad.append(f"{e}: {source} may import {may}")
    assert not bad, ("imports against DESIGN.md's package table:\n    " + "\n    ".join(bad))

"""Where code lives: the project's import graph has no cycle, and each package imports only the layers below it.

The graph is read from the source (every `import`, at module top or inside a function), so an import hidden
in a function body cannot hide a cycle. Layers, top to bottom: `dags/` and `cli/` (entry points), `jobs/`
(one module per task), `expectations/`, `models/`, `features/`, `core/` (the platform); `demo_shop/` (the
demo data generator) stands beside them and shares only the shop's schema and mapping contract with the
extraction code. The schema modules (shop, feature tables, CRM) import nothing from the project but each other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("dags", "cli", "jobs", "expectations", "models", "features", "core", "demo_shop")
#: What each package may import from the others (its own modules always).
ALLOWED = {
    "dags": {"core", "jobs"},
    "cli": {"core", "jobs", "features", "models", "expectations", "demo_shop"},
    "jobs": {"core", "features", "models", "expectations"},
    "expectations": {"core", "jobs", "models"},
    "models": {"core", "features"},
    "features": {"core"},
    "core": set(),
    "demo_shop": {"core"},
}
#: The modules of `core/` the demo generator may use: the shop's schema and mapping (the contract it
#: writes to), database connections and the configuration's folders; never the extraction's readers.
DEMO_SHOP_MAY_USE = {"core", "core.shop_schema", "core.mapping", "core.db", "core.config"}
#: The modules that say what the tables are (the shop's, the feature tables', the CRM's): every layer reads them,
#: so they import nothing from the project but each other.
SCHEMA_MODULES = {"core.shop_schema", "core.feature_schema", "core.crm_schema"}


def project_modules(root: Path = REPO) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Per module, the project modules it imports and the line of the first such import."""
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a list of module names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _described(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in component for b in graph.get(a, {}) if b in component)


@pytest.fixture(scope="module")
def graph():
    return import_graph(project_modules())


def test_the_project_has_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_described(component, graph) for component in found)


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "a.py").write_text("from core import b\n")
    (tmp_path / "core" / "b.py").write_text("def late():\n    from core.a import thing\n")
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    graph = import_graph(project_modules(tmp_path))
    assert cycles(graph) == [["core.a", "core.b"]]
    assert "core.b -> core.a (line 2)" in _described(["core.a", "core.b"], graph)


def test_each_package_imports_only_the_layers_below_it(graph):
    wrong = [
        f"{module} imports {target} (line {line})"
        for module, targets in graph.items()
        for target, line in targets.items()
        if (package := module.split(".")[0]) != (other := target.split(".")[0]) and other not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_demo_generator_and_the_extraction_share_only_the_shop_contract(graph):
    generator = [
        f"{module} imports {target} (line {line})"
        for module, targets in graph.items()
        if module.startswith("demo_shop")
        for target, line in targets.items()
        if target.startswith("core") and target not in DEMO_SHOP_MAY_USE
    ]
    assert not generator, "\n".join(generator)
    assert not [
        module
        for module, targets in graph.items()
        if not module.startswith(("demo_shop", "cli")) and any(target.startswith("demo_shop") for target in targets)
    ]


def test_jobs_are_named_by_the_dag_not_looked_up_by_name():
    for folder in ("dags", "jobs", "core"):
        for path in (REPO / folder).rglob("*.py"):
            assert "importlib" not in path.read_text(), f"{path.relative_to(REPO)}: dispatch by name"


def test_the_schema_modules_are_leaves(graph):
    wrong = [
        f"{module} imports {target} (line {line})"
        for module in SCHEMA_MODULES
        for target, line in graph.get(module, {}).items()
        if target not in SCHEMA_MODULES
    ]
    assert not wrong, "\n".join(wrong)

"""The packages import only downward, and no module imports itself in a circle.

Layers, lowest first: fexstack < invariants < overlays < runner < testkit (fixture
factory, AppImage packer, demo generation) < tasks (the doit task layer) < dodo.py.
A module may import its own layer and those below; tests/ and benchmarks/ may import
anything. Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from fexstack import jsonio
from fexstack.paths import PROJECT_ROOT

LAYERS = ("fexstack", "invariants", "overlays", "runner", "testkit", "tasks", "dodo")
OURS = (*LAYERS, "tests", "benchmarks")


def modules(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Every module of the layered packages (and dodo.py), by dotted name."""
    found = {"dodo": root / "dodo.py"}
    for package in LAYERS[:-1]:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) of each of our modules that ``name`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import mod" imports pkg.mod when that is a module of ours
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in OURS:
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                yield node.lineno, target


def layer(module: str) -> int:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else len(LAYERS)


def graph(found: dict[str, Path]) -> dict[str, set[str]]:
    known = set(found)
    return {name: {t for _, t in imports(name, path, known) if t != name}
            for name, path in found.items()}


def upward(found: dict[str, Path]) -> list[str]:
    known = set(found)
    return [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {name} imports {target}"
        for name, path in found.items()
        for line, target in imports(name, path, known)
        if layer(target) > layer(name)
    ]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ is imported with each of its modules: not a circle by itself."""
    return {name: {t for t in targets if not name.startswith(t + ".")}
            for name, targets in edges.items()}


def inside(package: str, edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The imports among one package's modules, those of its __init__ included: a module
    that imports the package's own names (``from tasks import main``) depends on it."""
    def ours(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    return {name: {t for t in targets if ours(t)} for name, targets in edges.items() if ours(name)}


def test_no_upward_import() -> None:
    found = modules()
    assert {"fexstack.jsonio", "invariants.check", "overlays.stack", "runner.launch",
            "tasks.stamp", "testkit.factory", "dodo"} <= set(found)
    assert upward(found) == []


def test_no_import_circle() -> None:
    assert circles(package_edges(graph(modules()))) == []


def test_no_import_circle_inside_tasks() -> None:
    """The task layer's modules, each named after one noun, import each other one way."""
    edges = inside("tasks", graph(modules()))
    assert {"tasks.stackinfo", "tasks.inputs", "tasks.stamp", "tasks.uptodate",
            "tasks.layers", "tasks.commands", "tasks.reporter", "tasks.creators"} <= set(edges)
    assert "tasks.declare" not in edges
    assert circles(edges) == []
    assert "tasks.creators" in edges["tasks.loader"] and "tasks.stackinfo" in edges["tasks.stamp"]


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The checks fail on an upward import and on a circle, also inside a function."""
    for package in ("fexstack", "overlays", "runner"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "dodo.py").write_text("import tasks\n")
    (tmp_path / "fexstack" / "low.py").write_text(
        "def f():\n    from runner import high\n    return high\n")
    (tmp_path / "runner" / "high.py").write_text("from fexstack import low\n")
    (tmp_path / "overlays" / "a.py").write_text("from . import b\n")
    (tmp_path / "overlays" / "b.py").write_text("import overlays.a\n")
    found = modules(tmp_path)
    ups = [(name, target) for name, path in found.items()
           for _, target in imports(name, path, set(found)) if layer(target) > layer(name)]
    assert ups == [("fexstack.low", "runner.high")]
    assert circles(package_edges(graph(found))) == [
        ["fexstack.low", "runner.high"], ["overlays.a", "overlays.b"]]


def test_a_circle_through_the_tasks_package_is_seen(tmp_path: Path) -> None:
    """A tasks module that imports the package's own names, while the package imports it
    (lazily), is a circle inside tasks/; across packages that edge is not one."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text(
        "def main():\n    from tasks.loader import Loader\n    return Loader\n")
    (tmp_path / "tasks" / "loader.py").write_text("from tasks import creators\nLoader = 1\n")
    (tmp_path / "tasks" / "creators.py").write_text("from tasks import main\n")
    (tmp_path / "dodo.py").write_text("")
    edges = inside("tasks", graph(modules(tmp_path)))
    assert edges["tasks.creators"] == {"tasks"}
    assert circles(edges) == [["tasks", "tasks.creators", "tasks.loader"]]
    (tmp_path / "tasks" / "creators.py").write_text("from tasks import loader\n")
    assert circles(inside("tasks", graph(modules(tmp_path)))) == [
        ["tasks.creators", "tasks.loader"]]
    (tmp_path / "tasks" / "creators.py").write_text("X = 1\n")
    assert circles(inside("tasks", graph(modules(tmp_path)))) == []


def test_schema_folders_are_registered_by_their_packages() -> None:
    import invariants
    import overlays
    import runner

    for package in (invariants, overlays, runner):
        assert Path(package.__file__).resolve().parent / "schemas" in jsonio.SCHEMA_DIRS
    assert jsonio.schema("run-report")["title"]  # found through runner's registration

"""The package's import graph: no cycles, arrows point down the layers, no private names cross modules.

Every import statement counts, function-level ones included (ast, not the runtime). Layers, top to
bottom: commands (``freqjax.main``, ``freqjax.bench``, ``freqjax.studies``, every ``__main__`` and
``cli`` module) -> ``train`` -> ``interop`` -> ``models``, ``data``, ``compress`` -> ``ops`` ->
``dct``, ``runtime``. A module may import its own layer or lower ones, never a higher one: so no
library module imports a command or a benchmark.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "freqjax"

# Layer of each top-level part of the package: lower numbers sit higher (may import larger numbers).
LAYERS = {
    "main": 0,
    "bench": 0,
    "studies": 0,
    "train": 1,
    "interop": 2,
    "models": 3,
    "data": 3,
    "compress": 3,
    "ops": 4,
    "dct": 5,
    "runtime": 5,
    "__init__": 5,  # freqjax/__init__.py: the version and a docstring
}
COMMAND_MODULES = ("__main__", "cli")


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``root`` (a package named ``package``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(module -> the package's modules it imports, [(module, imported module, private name)]).

    ``from a.b import c`` is an edge to ``a.b.c`` where that is a module, else to ``a.b``; a package
    that imports all its modules with ``pkgutil.iter_modules(__path__)`` has an edge to each. A name
    starting with one underscore taken from another module (imported, or read as ``module._name``
    from an imported module) is reported as private.
    """
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {}
    private: list[tuple[str, str, str]] = []
    for name, path in modules.items():
        source = path.read_text()
        tree = ast.parse(source, str(path))
        edges, aliases, names = _imports(tree, package, modules)
        if path.name == "__init__.py" and "iter_modules(__path__)" in source:
            # a package that imports every one of its modules (freqjax.models finds its families so)
            edges |= {m for m in modules if m.rpartition(".")[0] == name}
        graph[name] = edges - {name}
        taken = names + [
            (aliases[node.value.id], node.attr)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
        ]
        private += [(name, target, attr) for target, attr in taken if _is_private(attr) and target != name]
    return graph, private


def _imports(tree: ast.AST, package: str, modules: dict) -> tuple[set[str], dict[str, str], list[tuple[str, str]]]:
    """(imported modules, local alias -> module, [(module, name) taken by ``from module import name``])."""
    edges: set[str] = set()
    aliases: dict[str, str] = {}
    names: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    edges.add(alias.name)
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in modules:
                    edges.add(target)
                    aliases[alias.asname or alias.name] = target
                else:
                    edges.add(node.module)
                    names.append((node.module, alias.name))
    return edges, aliases, names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def layer(module: str) -> int:
    """The layer of a ``freqjax`` module (commands are layer 0 wherever they sit)."""
    parts = module.split(".")
    if parts[-1] in COMMAND_MODULES:
        return 0
    top = parts[1] if len(parts) > 1 else "__init__"
    return LAYERS[top]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if layer(b) < layer(a)
    ]


GRAPH, PRIVATE = import_graph(ROOT, "freqjax")


def test_every_top_level_part_has_a_layer():
    tops = {m.split(".")[1] if "." in m else "__init__" for m in GRAPH}
    assert tops <= set(LAYERS), sorted(tops - set(LAYERS))
    assert len([p for p in ROOT.glob("*.py")]) <= 6  # at most 6 modules directly in freqjax/


def test_the_package_has_no_import_cycle():
    assert find_cycles(GRAPH) == []


def test_imports_point_down_the_layers():
    assert upward_imports(GRAPH) == []


def test_no_module_takes_a_private_name_from_another():
    assert PRIVATE == []


def test_the_checks_find_a_planted_cycle_upward_import_and_private_name(tmp_path):
    pkg = tmp_path / "freqjax"
    (pkg / "models").mkdir(parents=True)
    (pkg / "bench").mkdir()
    for init in (pkg / "__init__.py", pkg / "models" / "__init__.py", pkg / "bench" / "__init__.py"):
        init.write_text("")
    (pkg / "models" / "a.py").write_text("from freqjax.models.b import thing\n")
    # function-level imports count too
    (pkg / "models" / "b.py").write_text(
        textwrap.dedent(
            """
            def thing():
                from freqjax.models import a
                from freqjax.bench.timing import _clock
                return a
            """
        )
    )
    (pkg / "bench" / "timing.py").write_text("_clock = None\n")
    # and a package that imports all its modules, one of which imports the package back
    (pkg / "data").mkdir()
    (pkg / "data" / "__init__.py").write_text("import pkgutil\nfor m in pkgutil.iter_modules(__path__):\n    pass\n")
    (pkg / "data" / "c.py").write_text("from freqjax.data import something\n")
    graph, private = import_graph(pkg, "freqjax")
    assert find_cycles(graph) == [["freqjax.data", "freqjax.data.c"], ["freqjax.models.a", "freqjax.models.b"]]
    assert upward_imports(graph) == ["freqjax.models.b (layer 3) imports freqjax.bench.timing (layer 0)"]
    assert private == [("freqjax.models.b", "freqjax.bench.timing", "_clock")]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_find_cycles(graph, expected):
    assert sorted(find_cycles(graph)) == expected

"""The package's layering, read from the source: no import cycle, and each layer imports only below it.

Every ``import`` counts, inside functions too (a function-level import hides a cycle, it does not
remove it), and importing ``a.b.c`` counts as importing the packages ``a.b`` and ``a`` as well,
since Python runs their ``__init__`` first. docs/ARCHITECTURE.md shows the same table.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "facepipe"

#: Layer of each module (the longest matching prefix wins) and the layers each layer may import.
LAYERS = {
    "facepipe": "base", "facepipe.flags": "base", "facepipe.logs": "base", "facepipe.coords": "base", "facepipe.model_dir": "base",
    "facepipe.ray_compat": "base", "facepipe.runtime": "base", "facepipe.storage": "base",
    "facepipe.faces": "faces",
    "facepipe.data": "data", "facepipe.augment": "data", "facepipe.plots": "data",
    "facepipe.tasks": "models", "facepipe.models": "models", "facepipe.predictor": "models",
    "facepipe.train": "training", "facepipe.train_config": "training", "facepipe.evaluate": "training", "facepipe.explore": "training",
    "facepipe.annotate": "annotate",
    "facepipe.cli": "cli", "facepipe.__main__": "cli",
}
MAY_IMPORT = {
    "base": {"base"},
    "faces": {"base", "faces"},
    "data": {"base", "faces", "data"},
    "models": {"base", "data", "models"},
    "training": {"base", "faces", "data", "models", "training"},
    "annotate": {"base", "faces", "data", "models", "annotate"},
    "cli": {"base", "faces", "data", "models", "training", "annotate", "cli"},
}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for the package at ``root``."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (module level or inside functions), with the
    packages above each imported module (their ``__init__`` runs first) but not its own."""
    mods = modules(root)
    top = root.name

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        own_parents = {mod.rsplit(".", i)[0] for i in range(mod.count(".") + 1)}
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                names = [base, *(f"{base}.{a.name}" for a in node.names)]  # ``from pkg import submodule`` too
            else:
                continue
            for name in names:
                if name.split(".")[0] != top or (hit := known(name)) is None:
                    continue
                for i in range(hit.count(".") + 1):
                    targets.add(hit.rsplit(".", i)[0])
        graph[mod] = targets - own_parents
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def layer_of(mod: str) -> str:
    best = max((p for p in LAYERS if mod == p or mod.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{mod}: no layer in tests/test_layers.py LAYERS (add it, and to docs/ARCHITECTURE.md)"
    return LAYERS[best]


def test_the_graph_finder_sees_function_level_and_package_cycles(tmp_path):
    # A hidden cycle as the issue found one: a function-level import back up the chain.
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from demo.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from demo import a\n    return a\n")
    (pkg / "sub" / "__init__.py").write_text("from demo.sub.x import y\n")
    (pkg / "sub" / "x.py").write_text("y = 1\n")
    (pkg / "c.py").write_text("from .sub import x\n")
    graph = import_graph(pkg)
    assert graph["demo.b"] == {"demo.a"}  # its own package is not an edge
    assert graph["demo.c"] == {"demo.sub", "demo.sub.x"}  # relative import, and the package's __init__
    assert graph["demo.sub.x"] == set()  # its own package's __init__ is not an edge
    assert find_cycle(graph) == ["demo.a", "demo.b", "demo.a"]
    # A module importing a sibling's submodule runs the sibling package's __init__: that is an edge.
    (pkg / "sub" / "x.py").write_text("def y():\n    from demo.c import x\n")
    assert find_cycle(import_graph(pkg)) is not None
    (pkg / "b.py").write_text("def g():\n    return 1\n")
    (pkg / "sub" / "x.py").write_text("y = 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_facepipe_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_each_layer_imports_only_what_it_may():
    bad = [f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})" for m, targets in sorted(import_graph(PACKAGE).items())
           for t in sorted(targets) if layer_of(t) not in MAY_IMPORT[layer_of(m)]]
    assert not bad, "imports across the layering of docs/ARCHITECTURE.md:\n" + "\n".join(bad)


@pytest.mark.parametrize("importer", ["facepipe.data", "facepipe.train", "facepipe.evaluate", "facepipe.faces"])
def test_training_side_imports_nothing_of_annotation(importer):
    graph = import_graph(PACKAGE)
    used = {t for m, ts in graph.items() if m == importer or m.startswith(importer + ".") for t in ts}
    assert not {t for t in used if t == "facepipe.annotate" or t.startswith("facepipe.annotate.")}


def test_faces_imports_neither_data_nor_annotate():
    graph = import_graph(PACKAGE)
    used = {t for m, ts in graph.items() if m.startswith("facepipe.faces") for t in ts}
    assert {layer_of(t) for t in used} <= {"base", "faces"}, sorted(used)

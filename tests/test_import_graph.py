"""The package's imports flow one way: no cycles, no lower floor importing a higher one.

Every `import` and `from ... import` of `vt_keras` modules counts, those
inside functions included (a lazy import is still a dependency). The floors,
lowest first, are written once, here; a module may import modules of its own
floor or of lower floors, and the graph of imports within a floor must have
no cycle.
"""
import ast
import os
import sys

import pytest

from tests.conftest import REPO_ROOT

# Lowest first. A name is a module or a package prefix (`vt_keras.layers`
# covers every module under it).
FLOORS = [
    ["vt_keras.errors", "vt_keras.registry", "vt_keras.ops", "vt_keras.backend", "vt_keras.distributed"],
    ["vt_keras.losses", "vt_keras.metrics"],
    ["vt_keras.layers"],
    ["vt_keras.data", "vt_keras.text"],
    ["vt_keras.models", "vt_keras.testing"],
    ["vt_keras.optimizers", "vt_keras.train"],
    ["vt_keras.export", "vt_keras.export_retrieval"],
    ["vt_keras.tasks"],
    ["vt_keras.cli"],
]

def _module_name(path):
    rel = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules():
    out = {}
    for root, _, files in os.walk(os.path.join(REPO_ROOT, "vt_keras")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                out[_module_name(path)] = path
    return out


def _imports(path, module, modules):
    """The vt_keras modules that `module` imports anywhere in its file."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("vt_keras") and name != module and name != "vt_keras":
                found.add(name)
    return found


def _floor(module):
    best = None
    for i, floor in enumerate(FLOORS):
        for prefix in floor:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (i, prefix)
    return None if best is None else best[0]


MODULES = _modules()
GRAPH = {m: _imports(p, m, MODULES) for m, p in MODULES.items()}


def test_every_module_has_a_floor():
    missing = sorted(m for m in MODULES if m != "vt_keras" and _floor(m) is None)
    assert not missing, f"modules without a floor in FLOORS: {missing}"


def test_no_module_imports_a_higher_floor():
    upward = sorted(f"{m} (floor {_floor(m)}) imports {d} (floor {_floor(d)})"
                    for m, deps in GRAPH.items() if m != "vt_keras"
                    for d in deps if _floor(d) is not None and _floor(m) is not None and _floor(d) > _floor(m))
    assert not upward, "\n".join(upward)


def _cycles(graph):
    """Every cycle found by a depth-first search, as lists of modules."""
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles():
    # A package's __init__ that re-exports its modules is not a cycle with them.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_a_traced_function_never_steps_into_importlib(monkeypatch):
    """Backend calls inside a tf.function do not import: AutoGraph would try to convert importlib (a warning)."""
    import importlib

    import tensorflow as tf

    from vt_keras import backend

    assert "vt_keras.backend.tensorflow_backend" in sys.modules  # imported with the package under TensorFlow

    def no_import(name, *args, **kwargs):
        raise AssertionError(f"imported {name} inside a traced function")

    monkeypatch.setattr(importlib, "import_module", no_import)
    assert int(tf.function(lambda: tf.constant(backend.num_replicas()))()) == 1

"""The package imports downward only: no module of tfprune imports, directly or through others, itself.

Every `import` statement counts, also those inside functions (a cycle broken only by a late import
is still a cycle). Importing a package's submodule is an edge to that submodule; the implicit import
of parent packages is not counted, except that a package's `__init__` is a node like any module.
"""

from __future__ import annotations

import ast
import pathlib

import tfprune

ROOT = pathlib.Path(tfprune.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = ("tfprune",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from package import submodule` needs the submodule; `from module import name` the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["tfprune.masks"] = set(graph["tfprune.masks"]) | {"tfprune.wrapper"}
    cycle = find_cycle(graph)
    assert cycle is not None and "tfprune.masks" in cycle and "tfprune.wrapper" in cycle


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "tfprune.masks" in graph["tfprune.mask_rules"]
    assert len(graph) > 40


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def test_the_layer_registry_sits_below_quantization():
    graph = import_graph()
    layer_modules = [name for name in graph if name == "tfprune.layers" or name.startswith("tfprune.layers.")]
    assert "tfprune.layers.quantization_spec" in layer_modules
    for name in layer_modules:
        reached = sorted(m for m in _reachable(graph, name) if m.startswith("tfprune.quantization"))
        assert reached == [], f"{name} imports {reached}"
    assert "tfprune.layers" in _reachable(graph, "tfprune.quantization.configs")  # quantization reads the registry

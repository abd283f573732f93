"""No import circles in jaxbp/ or experiments/.

The import graph is read statically (ast): every `import` and `from ... import` of a module,
at module level or inside a function — a function-level import is the usual hiding place of a
circle — except under `if __name__ == "__main__":`. An edge goes to the most specific module
named: `from jaxbp import losses` is an edge to jaxbp.losses, `from jaxbp import Dense` one to
the package jaxbp itself.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("jaxbp", "experiments")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_main_guard(node) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _import_nodes(tree):
    """Every Import/ImportFrom node, skipping `if __name__ == "__main__":` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _is_main_guard(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child
            stack.append(child)


def _resolve(name: str, modules) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, source: str, modules) -> set[str]:
    tree = ast.parse(source)
    is_package = MODULES.get(module, Path("x.py")).name == "__init__.py"
    edges = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from . import x / from .a import b
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                edges.add(resolved)
    return edges


def import_graph(modules=MODULES) -> dict[str, set[str]]:
    return {m: imports_of(m, path.read_text(), modules) for m, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the directed graph, or None (iterative depth-first search)."""
    color = dict.fromkeys(graph, 0)  # 0 new, 1 on the current path, 2 done
    for start in sorted(graph):
        if color[start]:
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        color[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = 2
                iters.pop()
            elif color.get(nxt, 2) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif color.get(nxt, 2) == 0:
                color[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "jaxbp.layers.dense" in graph["jaxbp.layers"]
    assert "jaxbp.losses" in graph["jaxbp.models.grad"]
    assert "experiments.catalog" in graph["experiments.run_all"]


def test_function_level_imports_count_and_main_guards_do_not():
    source = (
        "def f():\n    from jaxbp import losses\n"
        "if __name__ == '__main__':\n    import jaxbp.train\n"
    )
    assert imports_of("jaxbp.layer", source, MODULES) == {"jaxbp.losses"}


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)

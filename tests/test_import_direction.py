"""Imports run one way through the package (DESIGN.md), and no module imports itself back.

Every ``rar_jax`` module and every script in ``experiments/`` is parsed (``ast``, nothing is
imported), each import of a project module, at the top or inside a function, becomes an edge, and
the test fails on an edge from a lower layer to a higher one or on any cycle of modules.
"""

from __future__ import annotations

import ast
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first. A module may import modules of its own layer or of lower ones. The first part
# of a module's name below rar_jax (its package, or the module itself at the top) picks its layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "io"),
    ("rubrics",),
    ("data",),
    ("parallel",),
    ("models",),
    ("judges",),
    ("checkpoint", "metrics", "run_lock"),
    ("rl", "eval"),
    ("config", "serving", "aot"),
    ("cli",),
    ("experiments",),
)
LAYER_OF = {part: index for index, parts in enumerate(LAYERS) for part in parts}


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for rar_jax/** and experiments/*.py (as rar_jax.experiments)."""
    found = {}
    for path in sorted((REPO_ROOT / "rar_jax").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((REPO_ROOT / "experiments").glob("*.py")):
        name = "rar_jax.experiments" + ("" if path.stem == "__init__" else f".{path.stem}")
        found[name] = path
    return found


def _imports(path: pathlib.Path, name: str, modules: dict[str, pathlib.Path]) -> set[str]:
    """The project modules that ``path`` imports (``from pkg import submodule`` -> submodule)."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # Relative import.
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    return {target for target in targets if target in modules and target != name}


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    assert part in LAYER_OF, f"{module}: add its package {part!r} to LAYERS in {__file__}"
    return LAYER_OF[part]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items() if name != "rar_jax"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_follow_the_layers():
    graph = _graph()
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(source)
    )
    assert not wrong, "imports against the direction of LAYERS:\n" + "\n".join(wrong)


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_checker_sees_a_cycle_and_a_wrong_direction():
    # The checker itself, on a made-up graph: a -> b -> a is a cycle; models -> rl is upward.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _layer("rar_jax.rl.trainer") > _layer("rar_jax.models.decoder")
    assert "rar_jax.models.layers" in _graph()["rar_jax.models.decoder"]

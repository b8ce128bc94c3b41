"""The house drawn from its imports: rooms that follow the data, no import circles, registries as leaves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "workbench"
#: The subpackages in the data's order (the layout the README and workbench/__init__ describe).
ROOMS = ("workload", "costmodel", "offline", "policies", "engine", "schedule", "learn", "viz", "studies", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``workbench.*`` module a file imports, at module level or inside a function.

    Imports under ``if TYPE_CHECKING:`` never run and are left out.
    """
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("workbench"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _node(module: str) -> str:
    """The room a module lives in (``workbench.engine.core`` -> ``engine``), or the root module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "workbench"


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if name in ("workbench", "workbench._compat", "workbench.__main__"):
            continue  # the one place that brings the parts in, and the aliases of the old paths
        src = _node(name)
        for target in _imports(path):
            if target not in MODULES:
                continue  # ``from workbench.x import name`` also yields ``workbench.x.name``
            dst = _node(target)
            if dst != src and target != "workbench":
                graph.setdefault(src, set()).add(dst)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_rooms_exist_and_say_what_they_own():
    for room in ROOMS:
        init = SRC / room / "__init__.py"
        assert init.is_file(), room
        assert ast.get_docstring(ast.parse(init.read_text())), f"{room}/__init__.py has no docstring"


def test_no_import_circle_between_rooms():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_import_circle_between_modules():
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if name in ("workbench", "workbench._compat", "workbench.__main__"):
            continue
        graph[name] = {t for t in _imports(path) if t in MODULES and t != name and t != "workbench"
                       and not name.startswith(t + ".")}  # a module's own package __init__ runs first anyway
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("leaf", ["workbench.policies.registry", "workbench.policies.controllers", "workbench.errors", "workbench._paths"])
def test_registries_and_foundations_import_nothing_above_them(leaf):
    allowed = {"workbench.errors", "workbench._version"}
    imported = {t for t in _imports(MODULES[leaf]) if t in MODULES}
    assert imported <= allowed, sorted(imported - allowed)


def test_the_command_line_is_one_package_with_one_way_to_add_a_command():
    from workbench.cli import COMMANDS

    assert not list(SRC.glob("cli_*.py"))
    modules = {p.stem for p in (SRC / "cli").glob("*.py")} - {"__init__", "_common"}
    assert modules == set(COMMANDS)
    for name in COMMANDS:
        tree = ast.parse((SRC / "cli" / f"{name}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in tree.body), name


def test_the_old_flat_paths_still_import_the_same_objects():
    import workbench.engine.core
    import workbench.sim

    assert workbench.sim is workbench.engine.core
    from workbench.trace import load_trace
    from workbench.workload import load_trace as new

    assert load_trace is new


def test_every_engine_function_reads_at_once():
    """The engine is parts a reader finds by name, each function short enough to read at once (<= 80 lines)."""
    long = []
    for path in sorted((SRC / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_the_engine_parts_are_found_by_name():
    """MODEL.md sections 1 and 11: each concept of the engine has one named place."""
    from workbench.engine import clock, formers, hooks, kv, loop, recorder, replica

    for module, name in ((clock, "EventClock"), (replica, "Replica"), (replica, "ReplicaView"),
                         (formers, "ExclusiveFormer"), (formers, "MixedFormer"), (kv, "PagedKV"),
                         (kv, "PagedKVManager"), (kv, "reserved_admissible"), (recorder, "Recorder"),
                         (hooks, "WorkStealing"), (hooks, "Decision"), (loop, "Engine")):
        assert hasattr(module, name), f"{module.__name__}.{name}"

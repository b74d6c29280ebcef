"""The layout docs/architecture.md promises: imports run one way with no cycle among the
modules of digits/, tasks/ and flows/ (an import inside a function, or under
TYPE_CHECKING, runs later or never, so only a module's top-level imports count), and no
module grows past about 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("digits", "tasks", "flows")
MAX_LINES = 320  # "about 300": a long docstring's worth over, not a second job's


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def top_level_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports when it is imported itself."""
    found = set()
    for node in ast.parse(path.read_text()).body:  # the top level only
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from package import submodule` imports the submodule (the package is only
            # being initialised), `from module import name` the module.
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in submodules if name in known] or [node.module]
        elif isinstance(node, ast.With):  # `with muted_stderr(): from tasks... import ...`
            names = [name for inner in node.body if isinstance(inner, ast.ImportFrom)
                     for name in [inner.module]]
        else:
            continue
        found |= {name for name in names if name in known}
    return found - {module_name(path)}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> the modules it imports), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module], _ = "open", stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module], _ = "done", stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: top_level_imports(path, set(known)) for name, path in known.items()}


def test_the_modules_import_each_other_without_a_cycle():
    assert cycle_in(import_graph()) is None


def test_the_cycle_check_finds_one():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def test_the_library_never_imports_tasks_or_flows_at_import_time():
    graph = import_graph()
    upward = {module: sorted(t for t in targets if t.split(".")[0] in ("tasks", "flows"))
              for module, targets in graph.items() if module.startswith("digits")}
    assert {module: targets for module, targets in upward.items() if targets} == {}


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_about_300_lines(name):
    assert len(modules()[name].read_text().splitlines()) <= MAX_LINES


def test_the_unit_files_dealt_out_first_exist():
    """tests/conftest.py names them: a renamed one would silently go back to the end."""
    from tests.conftest import LONGEST_UNIT_FILES

    unit = Path(__file__).parent
    assert [name for name in LONGEST_UNIT_FILES if not (unit / name).is_file()] == []

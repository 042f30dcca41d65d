"""The layout a reader relies on: Alembic's directory holds only migrations; tooling imports flow one way.

These read the source with ``ast``; they cost milliseconds and catch a helper
dropped beside env.py, an import of test code, or a cycle, before review does.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

TOOLING = ROOT / "dbtools"
SHIPPED = [ROOT / "dbtools", ROOT / "models", ROOT / "migrations", ROOT / "bench"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (functions and TYPE_CHECKING blocks too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def tooling_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in TOOLING.rglob("*.py")}
    return {name: {other for other in imported(path) if other in modules} for name, path in modules.items()}


def test_migrations_directory_holds_only_alembics_files() -> None:
    entries = {entry.name for entry in (ROOT / "migrations").iterdir()} - {"__pycache__"}
    assert entries == {"env.py", "script.py.mako", "versions"}


def test_nothing_shipped_imports_from_tests() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in SHIPPED
        for path in folder.rglob("*.py")
        if any(name == "tests" or name.startswith("tests.") for name in imported(path))
    ]
    assert offenders == []


def test_migration_scripts_import_nothing_from_the_project() -> None:
    project = ("models", "dbtools", "tests", "bench")
    for path in (ROOT / "migrations" / "versions").glob("*.py"):
        assert not [name for name in imported(path) if name.split(".")[0] in project], path.name


def test_shared_tooling_never_imports_a_command() -> None:
    upward = {
        name: sorted(other for other in imports if other.startswith("dbtools.commands"))
        for name, imports in tooling_graph().items()
        if not name.startswith("dbtools.commands") and name != "dbtools.__main__"
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_tooling_import_graph_has_no_cycles() -> None:
    graph = tooling_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(name) :], name])}")
        if name in done:
            return
        for other in sorted(graph.get(name, ())):
            visit(other, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_run_asks_which_command_is_running_and_failed_is_printed_once() -> None:
    sources = {path: path.read_text() for folder in SHIPPED for path in folder.rglob("*.py")}
    assert [path for path, text in sources.items() if "cmd_opts" in text] == []
    printing = [path.relative_to(ROOT).as_posix() for path, text in sources.items() if '"FAILED: ' in text]
    assert printing == ["dbtools/__main__.py"]

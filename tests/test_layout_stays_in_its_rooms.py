"""The layout a reader relies on: Alembic's directory holds only migrations; tooling imports flow one way.

These read the source with ``ast``; they cost milliseconds and catch a helper
dropped beside env.py, an import of test code, a room reaching into another,
or a cycle, before review does. The rooms (``dbtools/__init__.py``): shared
modules at the top, below ``runtime/``, ``autogenerate/`` and ``lint/``, with
``commands/`` above them all, and ``fleet/`` beside ``commands/``, over ``runtime/``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

TOOLING = ROOT / "dbtools"
ROOMS = ("dbtools.runtime", "dbtools.autogenerate", "dbtools.lint", "dbtools.commands", "dbtools.fleet")
# Which rooms a room must never import: each phase stands on the shared modules alone.
# The fleet runs many single-target runs: it may use runtime/ (what a run executes), and reaches
# a command only through the ``main`` __main__ hands it; only __main__ imports the fleet.
FORBIDDEN = {
    "dbtools.runtime": ("dbtools.autogenerate", "dbtools.lint", "dbtools.commands", "dbtools.fleet"),
    "dbtools.autogenerate": ("dbtools.runtime", "dbtools.lint", "dbtools.commands", "dbtools.fleet"),
    "dbtools.lint": ("dbtools.runtime", "dbtools.commands", "dbtools.fleet"),
    "dbtools.commands": ("dbtools.fleet",),
    "dbtools.fleet": ("dbtools.autogenerate", "dbtools.lint", "dbtools.commands"),
}
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


def tooling_graph(root: Path = TOOLING) -> dict[str, set[str]]:
    modules = {module_name(path): path for path in root.rglob("*.py")}
    return {name: {other for other in imported(path) if other in modules} for name, path in modules.items()}


def room_of(module: str) -> str:
    """The room a module lives in, or "shared" for the modules at the top of dbtools/."""
    return next((room for room in ROOMS if module == room or module.startswith(room + ".")), "shared")


def crossings(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a rule of the rooms, as "importer -> imported"."""
    found = []
    for name, imports in sorted(graph.items()):
        room = room_of(name)
        for other in sorted(imports):
            target = room_of(other)
            if target == room and room != "dbtools.commands":
                continue
            shared_up = room == "shared" and target != "shared" and name != "dbtools.__main__"
            forbidden = target in FORBIDDEN.get(room, ())
            # Only __main__ dispatches to commands, and no command calls another.
            to_command = target == "dbtools.commands" and name != "dbtools.__main__"
            if shared_up or forbidden or to_command:
                found.append(f"{name} -> {other}")
    return found


def test_migrations_directory_holds_only_alembics_files() -> None:
    entries = {entry.name for entry in (ROOT / "migrations").iterdir()} - {"__pycache__"}
    # head.txt: the graph's head in one tracked line, so parallel migrations conflict in git.
    assert entries == {"env.py", "script.py.mako", "versions", "head.txt"}


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


def test_each_room_imports_only_what_lies_below_it() -> None:
    assert crossings(tooling_graph()) == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("dbtools.lint.locks", "dbtools.runtime.locking"),  # lint reaching into the runtime
        ("dbtools.runtime.backup", "dbtools.autogenerate.hooks"),  # runtime into autogenerate
        ("dbtools.autogenerate.renames", "dbtools.lint.dataloss"),  # autogenerate into lint
        ("dbtools.target", "dbtools.runtime.locking"),  # a shared module reaching up
        ("dbtools.commands.check", "dbtools.commands.upgrade"),  # a command calling a command
        ("dbtools.runtime.status", "dbtools.commands.status"),  # a room calling a command
        ("dbtools.fleet.runner", "dbtools.commands.upgrade"),  # the fleet calling a command, not main
        ("dbtools.commands.upgrade", "dbtools.fleet.runner"),  # a command reaching into the fleet
        ("dbtools.runtime.locking", "dbtools.fleet.runner"),  # a run depending on the fleet around it
    ],
)
def test_a_planted_crossing_is_caught(importer: str, imported: str) -> None:
    graph = tooling_graph()
    graph[importer] = {*graph[importer], imported}
    assert crossings(graph) == [f"{importer} -> {imported}"]


def test_dbtools_has_its_rooms_and_few_modules_at_the_top() -> None:
    rooms = {path.name for path in TOOLING.iterdir() if (path / "__init__.py").exists()}
    assert rooms == {"runtime", "autogenerate", "lint", "commands", "fleet"}
    assert len(list(TOOLING.glob("*.py"))) <= 10


def test_the_fast_path_and_make_help_load_no_third_party_package() -> None:
    """``dbtools``, ``dbtools.runtime`` and what the fast path, the catalog, ``__main__`` and the fleet's
    modules import stay standard library: a fleet already at head imports nothing else either."""
    code = (
        "import sys, dbtools.runtime.fastpath, dbtools.runtime.nochange, dbtools.catalog, dbtools.__main__,"
        "dbtools.fleet.runner;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic', 'models', 'rich'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_fast_path_keys_on_every_setting_a_run_reads() -> None:
    """A new MIGRATION_* setting must change the fast path's answer, or a no-op could hide its effect."""
    from dbtools import settings

    names = {value for key, value in vars(settings).items() if key.endswith("_VAR")}
    assert set(settings.NAMES) == names
    sources = [path.read_text() for path in TOOLING.rglob("*.py")]
    read = {name for text in sources for name in re.findall(r"[\"'](MIGRATION_[A-Z_]+)[\"']", text)}
    assert read <= set(settings.NAMES)


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

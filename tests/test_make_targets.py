"""The Makefile and the alembic CLI, run as a user runs them."""

from __future__ import annotations

import ast
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from tests.helpers import (
    VENV,
    Project,
    as_from_a_terminal,
    base_env,
    current_revision,
    dump,
    engine_for,
    failed_line,
    insert_users,
    run,
)

USERS_DDL = (
    "CREATE TABLE users (\n\tid INTEGER NOT NULL, \n\tusername VARCHAR(64) NOT NULL, \n"
    "\temail VARCHAR(320) NOT NULL, \n\tcreated_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL, \n"
    "\tCONSTRAINT pk_users PRIMARY KEY (id), \n\tCONSTRAINT uq_users_email UNIQUE (email), \n"
    "\tCONSTRAINT uq_users_username UNIQUE (username)\n)"
)


def test_make_upgrade_creates_app_db_in_the_project_root(project_copy: Project) -> None:
    app_db = project_copy.root / "app.db"
    assert not app_db.exists()
    result = project_copy.make("upgrade")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(app_db) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert sql == USERS_DDL
    assert [version] == project_copy.heads()


def test_second_upgrade_is_a_no_op(project: Project, database_url: URL) -> None:
    project.migrate(database_url)  # set-up; the target under test follows
    insert_users(database_url, 3)
    before = dump(database_url)
    again = project.make("upgrade", url=database_url)
    assert again.returncode == 0, again.stderr
    assert "Running upgrade" not in again.stderr
    assert dump(database_url) == before


def test_make_downgrade_removes_the_table_and_upgrade_restores_it(
    project: Project, database_url: URL
) -> None:
    project.migrate(database_url)  # set-up; the target under test follows
    down = project.make("downgrade", url=database_url)
    assert down.returncode == 0, down.stderr
    engine = engine_for(database_url)
    try:
        assert sa.inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()
    assert current_revision(database_url) is None
    assert project.make("upgrade", url=database_url).returncode == 0
    assert current_revision(database_url) == project.heads()[0]


def test_downgrade_to_base_by_name(project: Project, database_url: URL) -> None:
    project.migrate(database_url)  # set-up; the target under test follows
    result = project.make("downgrade", "rev=base", url=database_url)
    assert result.returncode == 0, result.stderr
    assert current_revision(database_url) is None


def test_alembic_from_another_directory_uses_the_projects_app_db(
    project_copy: Project, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = project_copy.alembic("upgrade", "head", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []
    assert (project_copy.root / "app.db").exists()
    current = project_copy.alembic("current", cwd=elsewhere)
    assert f"{project_copy.heads()[0]} (head)" in current.stdout


def test_make_migration_without_model_changes_writes_nothing(project_copy: Project) -> None:
    assert project_copy.make("upgrade").returncode == 0
    before = sorted(project_copy.versions.iterdir())
    result = project_copy.make("migration", "msg=nothing changed")
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout
    assert sorted(project_copy.versions.iterdir()) == before


def test_make_check_passes_on_a_migrated_database(project: Project, database_url: URL) -> None:
    project.migrate(database_url)  # set-up; the target under test follows
    result = project.make("check", url=database_url)
    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout


def test_make_help_lists_every_target(project: Project) -> None:
    for args in ([], ["help"]):
        result = project.make(*args)
        assert result.returncode == 0
        listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
        assert listed >= {
            "help",
            "install",
            "upgrade",
            "downgrade",
            "migration",
            "check",
            "current",
            "history",
            "sql",
            "stamp",
            "status",
            "verify",
            "repair",
            "rehearse",
            "restore",
            "schema",
            "test",
            "lint",
            "bench",
            "clean",
        }


def test_make_help_and_the_cli_take_each_summary_from_the_catalog(project: Project) -> None:
    import argparse
    import re

    from dbtools import catalog
    from dbtools.__main__ import build_parser

    makefile = (project.root / "Makefile").read_text()
    targets = re.findall(r"^([a-z-]+):", makefile, re.MULTILINE)
    assert sorted(targets) == sorted(e.name for e in catalog.ENTRIES if e.name not in catalog.CLI_ONLY)
    assert "## " not in makefile  # no second copy of a summary
    shown = project.make("help").stdout.splitlines()
    for entry in catalog.ENTRIES:
        if entry.name not in catalog.CLI_ONLY:
            assert any(line.split()[0] == entry.name and entry.summary in line for line in shown[1:])
    assert "``" not in (build_parser().description or "")  # --help shows text, not the docstring's markup
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {name: parser.description for name, parser in sub.choices.items()} == {
        entry.name: entry.summary for entry in catalog.ENTRIES if entry.command
    }


def test_make_migration_without_msg_prints_usage(project_copy: Project) -> None:
    result = project_copy.make("migration")
    assert result.returncode != 0
    assert 'usage: make migration msg="describe the change"' in result.stderr
    assert not (project_copy.root / "app.db").exists()


def test_make_sql_prints_ddl_without_touching_a_database(project_copy: Project) -> None:
    sqlite_sql = project_copy.make("sql")
    assert sqlite_sql.returncode == 0, sqlite_sql.stderr
    assert "CREATE TABLE users" in sqlite_sql.stdout
    assert "created_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL" in sqlite_sql.stdout
    assert not (project_copy.root / "app.db").exists()
    # No server listens there: offline mode only needs the dialect.
    pg = URL.create("postgresql+psycopg", "nobody", "secret-pw", "127.0.0.1", 9, "nowhere")
    pg_sql = project_copy.make("sql", url=pg)
    assert pg_sql.returncode == 0, pg_sql.stderr
    assert "created_at TIMESTAMP WITH TIME ZONE DEFAULT (CURRENT_TIMESTAMP) NOT NULL" in pg_sql.stdout
    assert "id SERIAL NOT NULL" in pg_sql.stdout
    assert "secret-pw" not in pg_sql.stdout + pg_sql.stderr


def test_make_current_and_history_show_the_revision(project: Project, database_url: URL) -> None:
    head = project.heads()[0]
    project.migrate(database_url)  # set-up; the target under test follows
    assert f"{head} (head)" in project.make("current", url=database_url).stdout
    assert f"<base> -> {head} (head), create users table" in project.make("history").stdout


def test_make_clean_removes_the_virtualenv_but_never_the_database(
    project_copy: Project, tmp_path: Path
) -> None:
    venv = tmp_path / "throwaway-venv"
    (venv / "bin").mkdir(parents=True)
    cache = project_copy.root / "models" / "__pycache__"
    cache.mkdir()
    app_db = project_copy.root / "app.db"
    app_db.write_bytes(b"")
    argv = ["make", "--no-print-directory", "-C", str(project_copy.root), f"VENV={venv}", "clean"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not venv.exists()
    assert not cache.exists()
    assert app_db.exists()


def test_a_target_that_takes_no_fleet_refuses_one_and_runs_nothing(project: Project, tmp_path: Path) -> None:
    """make downgrade fleet=... would otherwise step DATABASE_URL's one database back, fleet= ignored."""
    url = URL.create("sqlite", database=str(tmp_path / "one.db"))
    project.migrate(url)  # set-up; the target under test follows
    before = current_revision(url)
    for argv in (["downgrade", "fleet=fleet.toml"], ["restore", "report=r.json"]):
        result = project.make(*argv, url=url)
        assert result.returncode == 2
        assert f"FAILED: make {argv[0]} takes no fleet= or report=" in failed_line(result)
    assert current_revision(url) == before


def test_commands_that_only_look_do_not_create_the_database(project_copy: Project) -> None:
    app_db = project_copy.root / "app.db"
    for target in ("current", "check"):
        line = failed_line(project_copy.make(target))
        assert f"{app_db} does not exist yet; run `make upgrade` to create it" in line
    assert not app_db.exists()


def test_every_target_works_in_a_folder_with_spaces(tmp_path: Path) -> None:
    project = Project.copy_to(tmp_path / "My Projects" / "app")
    first, _ = project.extend_history(
        ('op.add_column("users", sa.Column("nickname", sa.String(32)))', "pass")
    )
    url = URL.create("sqlite", database=str(project.root / "my app.db"))
    project.migrate(url, first)
    relative = {"DATABASE_URL": "sqlite:///my app.db"}  # relative to the project, spaces and all

    upgraded = project.make("upgrade", env=relative)
    status = project.make("status", env=relative)
    (backup,) = (project.root / "backups").iterdir()
    restored = project.make("restore", f"file=backups/{backup.name}", env=relative)

    for result in (upgraded, status, restored):
        assert result.returncode == 0, result.stderr
    assert backup.name.startswith(f"my app.db-{first}-")
    assert current_revision(url) == first


def test_a_migration_message_is_taken_literally(project_copy: Project) -> None:
    project_copy.migrate(URL.create("sqlite", database=str(project_copy.root / "app.db")))
    model = project_copy.root / "models" / "user.py"
    model.write_text(
        model.read_text().replace(
            "    def __repr__",
            "    nickname: Mapped[str | None] = mapped_column(String(32))\n\n    def __repr__",
        )
    )
    message = 'costs $5 """; raise SystemExit(3) # \\ done\nand a second line, it\'s $(id)'

    result = project_copy.make("migration", f"msg={message}")

    assert result.returncode == 0, result.stderr
    (script,) = [p for p in project_copy.versions.glob("*.py") if "create_users" not in p.name]
    module = ast.parse(script.read_text())
    docstring = ast.get_docstring(module, clean=False)
    assert docstring is not None
    assert docstring.splitlines()[:2] == message.splitlines()
    assert not [node for node in module.body if isinstance(node, ast.Raise)]


def test_a_revision_is_taken_literally_never_run_by_the_shell(project: Project, tmp_path: Path) -> None:
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    project.migrate(url)
    before = dump(url)
    touched = tmp_path / "touched"

    results = {
        target: project.make(target, f"rev=head; touch '{touched}'", url=url)
        for target in ("upgrade", "downgrade", "rehearse", "sql")
    }

    assert not touched.exists()
    for target, result in results.items():
        assert result.returncode != 0, target
        assert "head; touch" in result.stdout + result.stderr, target  # one argument, as typed
    assert dump(url) == before


def test_upgrade_with_two_heads_says_what_to_run(project_copy: Project, tmp_path: Path) -> None:
    database_url = URL.create("sqlite", database=str(tmp_path / "app.db"))  # the history is what matters
    head = project_copy.heads()[0]
    project_copy.migrate(database_url)
    left = project_copy.add_migration("pass", down_revision=head)
    right = project_copy.add_migration("pass", down_revision=head)

    line = failed_line(project_copy.make("upgrade", url=database_url))

    assert f"several heads ({', '.join(sorted([left, right]))})" in line
    assert "make upgrade rev=heads" in line
    assert project_copy.make("upgrade", "rev=heads", url=database_url).returncode == 0


def test_one_step_back_from_a_merge_says_what_to_run(project_copy: Project, tmp_path: Path) -> None:
    database_url = URL.create("sqlite", database=str(tmp_path / "app.db"))  # the history is what matters
    head = project_copy.heads()[0]
    left = project_copy.add_migration("pass", down_revision=head)
    right = project_copy.add_migration("pass", down_revision=head)
    merge = project_copy.add_migration("pass", down_revision=left)
    (path,) = project_copy.versions.glob(f"*{merge}*.py")
    path.write_text(
        path.read_text().replace(f"down_revision = {left!r}", f"down_revision = ({left!r}, {right!r})")
    )
    project_copy.migrate(database_url)
    before = dump(database_url)

    line = failed_line(project_copy.make("downgrade", url=database_url))

    assert "merge revision" in line
    assert "make downgrade rev=<revision>" in line
    assert dump(database_url) == before


def test_ctrl_c_during_a_migration_is_one_line_and_changes_nothing(
    project_copy: Project, database_url: URL
) -> None:
    project_copy.migrate(database_url)
    insert_users(database_url, 5)
    project_copy.add_migration(
        'op.create_table("tmp", sa.Column("id", sa.Integer))\nimport time\ntime.sleep(30)',
        'op.drop_table("tmp")',
    )
    before = dump(database_url)
    argv = [str(VENV / "bin" / "python"), "-m", "dbtools", "upgrade"]
    process = subprocess.Popen(
        argv,
        cwd=project_copy.root,
        env=base_env(database_url),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    assert process.stderr is not None
    seen = ""
    for line in process.stderr:  # the migration has started once Alembic says so
        seen += line
        if "Running upgrade" in line:
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)

    result = subprocess.CompletedProcess(argv, process.returncode, "", seen + rest)
    assert "interrupted" in failed_line(result)
    assert process.returncode == 130
    assert dump(database_url) == before


def test_make_upgrade_names_a_hand_written_constraint_by_the_convention(
    project_copy: Project, database_url: URL
) -> None:
    """The same name `alembic upgrade` gives it, though `make upgrade` does not load the models up front."""
    project_copy.add_migration(
        'with op.batch_alter_table("users") as batch_op:\n'
        '    batch_op.create_check_constraint("email_at", sa.text("email LIKE \'%@%\'"))'
    )
    result = project_copy.make("upgrade", url=database_url)
    assert result.returncode == 0, result.stderr
    engine = engine_for(database_url)
    try:
        names = [c["name"] for c in sa.inspect(engine).get_check_constraints("users")]
    finally:
        engine.dispose()
    assert names == ["ck_users_email_at"]


def test_a_migration_run_reads_the_convention_without_loading_the_orm(
    project_copy: Project, tmp_path: Path
) -> None:
    """Alembic asks every operation for the naming convention; models/naming.py answers without the ORM."""
    from models import Base
    from models.naming import NAMING_CONVENTION

    assert Base.metadata.naming_convention == NAMING_CONVENTION  # the one the models use
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    project_copy.migrate(url)
    project_copy.add_migration(
        'op.add_column("users", sa.Column("bio", sa.Text))\n'
        'with op.batch_alter_table("users") as batch_op:\n'
        '    batch_op.create_check_constraint("bio_short", sa.text("length(bio) < 500"))'
    )
    argv = [str(VENV / "bin" / "python"), "-X", "importtime", "-m", "dbtools", "upgrade"]
    result = run(argv, cwd=project_copy.root, env=base_env(url))
    assert result.returncode == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line
    }
    assert not {"sqlalchemy.orm", "models"} & imported
    engine = engine_for(url)
    try:
        assert [c["name"] for c in sa.inspect(engine).get_check_constraints("users")] == [
            "ck_users_bio_short"
        ]
    finally:
        engine.dispose()

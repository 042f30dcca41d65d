"""The committed schema snapshot matches the migrations; `make schema` rewrites it."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.runtime import snapshot
from tests.helpers import ROOT, Project, url_string

SCRIPT = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))


def fresh_snapshot(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return snapshot.sqlite_schema(SCRIPT)
    with pgserver.fresh_database(request.getfixturevalue("pg_admin_url")) as url:
        return snapshot.postgresql_schema(SCRIPT, url)


def test_committed_snapshot_is_up_to_date(backend: str, request: pytest.FixtureRequest) -> None:
    path = ROOT / "schema" / f"{backend}.sql"
    diff = snapshot.stale(path, fresh_snapshot(backend, request))
    assert not diff, f"schema/{backend}.sql is stale; run `make schema` and commit it:\n{diff}"


def test_snapshot_is_the_same_on_every_run(backend: str, request: pytest.FixtureRequest) -> None:
    assert fresh_snapshot(backend, request) == fresh_snapshot(backend, request)


def test_a_new_migration_makes_the_snapshot_stale_until_make_schema(
    project_copy: Project, pg_admin_url: URL
) -> None:
    project_copy.add_migration('op.add_column("users", sa.Column("nickname", sa.String(32)))')
    check = project_copy.cli("schema", "--check", env={"TEST_DATABASE_URL": url_string(pg_admin_url)})
    assert check.returncode == 1
    assert "+\tnickname VARCHAR(32),\n" in check.stdout
    assert "+    nickname character varying(32)" in check.stdout
    assert "FAILED: the schema snapshot is stale; run `make schema`" in check.stderr

    written = project_copy.cli("schema", env={"TEST_DATABASE_URL": url_string(pg_admin_url)})

    assert written.returncode == 0, written.stderr
    assert "Wrote schema/sqlite.sql." in written.stdout
    assert "nickname character varying(32)" in (project_copy.root / "schema" / "postgresql.sql").read_text()
    again = project_copy.cli("schema", env={"TEST_DATABASE_URL": url_string(pg_admin_url)})
    assert "schema/postgresql.sql is up to date." in again.stdout


def test_a_hand_written_constraint_has_the_name_make_upgrade_gives_it_in_every_view(
    project_copy: Project, tmp_path: Path, pg_admin_url: URL
) -> None:
    """make schema, make status's scratch run and make lint's rendering apply the naming convention too.

    They configure their migration context as env.py does (``dbtools.runtime.options``).
    """
    project_copy.add_migration(
        'with op.batch_alter_table("users") as batch_op:\n'
        '    batch_op.create_check_constraint("email_at", sa.text("email LIKE \'%@%\'"))'
    )
    database = tmp_path / "app.db"
    upgraded = project_copy.cli("upgrade", url=URL.create("sqlite", database=str(database)))
    assert upgraded.returncode == 0, upgraded.stderr
    with sqlite3.connect(database) as connection:
        (ddl,) = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()
    assert "CONSTRAINT ck_users_email_at CHECK" in ddl

    written = project_copy.cli("schema", env={"TEST_DATABASE_URL": url_string(pg_admin_url)})
    assert written.returncode == 0, written.stderr
    for name in ("sqlite.sql", "postgresql.sql"):
        assert "CONSTRAINT ck_users_email_at CHECK" in (project_copy.root / "schema" / name).read_text(), name

    scratch = project_copy.cli("status", url=URL.create("sqlite", database=str(tmp_path / "new.db")))
    assert "(remove_constraint ck_users_email_at)" in scratch.stdout, scratch.stdout + scratch.stderr
    assert "checked on a scratch SQLite database" in scratch.stdout

    linted = project_copy.cli("lint")  # refused: the CHECK is not NOT VALID; what matters is its name
    assert "In: ALTER TABLE users ADD CONSTRAINT ck_users_email_at CHECK" in linted.stderr, linted.stderr


def test_a_rebuilt_tables_constraints_come_in_one_order() -> None:
    """A SQLite rebuild (Alembic's batch) writes a table's constraints in the order of a Python set."""
    columns = "id INTEGER NOT NULL, a VARCHAR(10), unique_id INTEGER, check_count INTEGER"
    constraints = (
        "CONSTRAINT pk_t PRIMARY KEY (id)",
        "CONSTRAINT uq_t_a UNIQUE (a)",
        "CONSTRAINT uq_t_unique_id UNIQUE (unique_id)",
        "CONSTRAINT ck_t_positive CHECK (id > 0)",
    )
    layouts = {
        snapshot.one_item_per_line(f"CREATE TABLE t ({columns}, {', '.join(order)})")
        for order in itertools.permutations(constraints)
    }
    assert len(layouts) == 1
    (layout,) = layouts
    # Columns keep their order, named like constraints or not; the constraints follow, sorted.
    assert layout.splitlines()[1:6] == [
        "\tid INTEGER NOT NULL,",
        "\ta VARCHAR(10),",
        "\tunique_id INTEGER,",
        "\tcheck_count INTEGER,",
        "\tCONSTRAINT ck_t_positive CHECK (id > 0),",
    ]


def test_postgresql_18s_named_not_null_dumps_as_15s() -> None:
    """A table renamed on PostgreSQL 18 keeps notes_id_not_null: the snapshot must not depend on it."""
    dumped_by_18 = (
        "CREATE TABLE public.memos (\n"
        "    id integer CONSTRAINT notes_id_not_null NOT NULL,\n"
        "    body text CONSTRAINT notes_body_not_null NOT NULL\n"
        ");\n"
    )
    dumped_by_15 = "CREATE TABLE public.memos (\n    id integer NOT NULL,\n    body text NOT NULL\n);\n"
    assert snapshot.normalise_pg_dump(dumped_by_18) == snapshot.normalise_pg_dump(dumped_by_15)

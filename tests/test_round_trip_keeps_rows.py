"""Migrations on populated databases: a round trip keeps every row and surviving value.

The pytest-alembic checks (test_pytest_alembic.py) already run every migration
with the rows of tests/revision_data.py in the tables. Here each migration is
upgraded and downgraded one step at a time with those rows present, and the
rows are compared: in the columns that exist throughout, nothing may be lost
or altered, after the upgrade and after the downgrade.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from pytest_alembic import MigrationContext
from sqlalchemy.engine import URL

from tests.helpers import Project, engine_for
from tests.revision_data import USERS_AT_CREATION

BOOKKEEPING = {"alembic_version", "alembic_checksums"}
Rows = dict[str, dict[str, Any]]  # table -> {"columns": [...], "rows": [...]}


def snapshot(engine: sa.Engine) -> Rows:
    with engine.connect() as conn:
        metadata = sa.MetaData()
        metadata.reflect(conn)
        out: Rows = {}
        for name, table in metadata.tables.items():
            if name in BOOKKEEPING:
                continue
            columns = [c.name for c in table.columns]
            rows = [dict(row._mapping) for row in conn.execute(sa.select(table))]
            out[name] = {"columns": columns, "rows": rows}
        return out


def surviving(*states: Rows) -> dict[str, list[str]]:
    """The tables present in every state, each with the columns present in every state."""
    tables = set.intersection(*(set(state) for state in states))
    return {
        name: [c for c in states[0][name]["columns"] if all(c in s[name]["columns"] for s in states)]
        for name in sorted(tables)
    }


def projected(state: Rows, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted((tuple(row[c] for c in columns) for row in state[table]["rows"]), key=repr)


def assert_round_trip(
    engine: sa.Engine, revision: str, upgrade: Callable[[], None], downgrade: Callable[[], None]
) -> None:
    before = snapshot(engine)
    upgrade()
    after_up = snapshot(engine)
    downgrade()
    after_down = snapshot(engine)
    for table, columns in surviving(before, after_up, after_down).items():
        original = projected(before, table, columns)
        assert projected(after_up, table, columns) == original, f"{revision} upgrade changed {table}"
        assert projected(after_down, table, columns) == original, f"{revision} downgrade changed {table}"


def test_every_migration_round_trips_with_rows(
    alembic_runner: MigrationContext, alembic_engine: sa.Engine
) -> None:
    revisions = alembic_runner.history.revisions[:-1]  # ["base", ..., newest], without "heads"
    for current, following in itertools.pairwise(revisions):
        alembic_runner.migrate_up_to(current)  # inserting each revision's rows on the way
        assert_round_trip(
            alembic_engine,
            following,
            lambda following=following: alembic_runner.command_executor.upgrade(following),  # type: ignore[misc]
            lambda current=current: alembic_runner.command_executor.downgrade(current),  # type: ignore[misc]
        )
    alembic_runner.migrate_up_to("heads")
    users = snapshot(alembic_engine)["users"]["rows"]
    assert {row["username"] for row in users} >= {row["username"] for row in USERS_AT_CREATION}


# Sample migrations after the real ones prove the check has teeth.
SAFE = {
    "add a column with a default": (
        'op.add_column("users", sa.Column("nickname", sa.String(32), server_default="anon", nullable=False))',
        'with op.batch_alter_table("users") as b:\n    b.drop_column("nickname")',
    ),
    "rebuild the table to widen a column": (
        'with op.batch_alter_table("users", recreate="always") as b:\n'
        '    b.alter_column("username", existing_type=sa.String(64), type_=sa.String(128))',
        'with op.batch_alter_table("users", recreate="always") as b:\n'
        '    b.alter_column("username", existing_type=sa.String(128), type_=sa.String(64))',
    ),
}
MANGLING = (
    'op.execute("UPDATE users SET email = lower(email)")',
    "pass",
)


def project_round_trip(project: Project, url: URL, revision: str, previous: str) -> None:
    engine = engine_for(url)
    try:
        assert_round_trip(
            engine,
            revision,
            lambda: project.migrate(url, revision),
            lambda: project.migrate(url, previous, action="downgrade"),
        )
    finally:
        engine.dispose()


def populate(url: URL) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            users = sa.Table("users", sa.MetaData(), autoload_with=conn)
            for row in USERS_AT_CREATION:
                conn.execute(users.insert().values({k: v for k, v in row.items() if k != "__tablename__"}))
    finally:
        engine.dispose()


def test_safe_sample_migrations_keep_every_value(project_copy: Project, database_url: URL) -> None:
    previous = project_copy.heads()[0]
    project_copy.migrate(database_url)
    populate(database_url)
    for upgrade, downgrade in SAFE.values():
        revision = project_copy.add_migration(upgrade, downgrade)
        project_round_trip(project_copy, database_url, revision, previous)
        project_copy.migrate(database_url, revision)
        previous = revision


def test_a_migration_that_mangles_values_is_caught(project_copy: Project, database_url: URL) -> None:
    previous = project_copy.heads()[0]
    project_copy.migrate(database_url)
    populate(database_url)
    revision = project_copy.add_migration(*MANGLING)
    with pytest.raises(AssertionError, match=f"{revision} upgrade changed users"):
        project_round_trip(project_copy, database_url, revision, previous)

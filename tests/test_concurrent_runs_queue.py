"""Concurrent runs on one database queue up: all succeed, each migration runs once.

Extra migrations in a copy of the project make a second application fail
loudly: one inserts a row under a unique constraint, one creates a table. The
last builds an index as the README says to on PostgreSQL: concurrently, in an
``autocommit_block()``, whose COMMIT must not let a second run in.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import pgserver
from tests import workers
from tests.helpers import Project, base_env, current_revision, engine_for, recorded_checksums

PROCESSES = 8
CONCURRENT_INDEX = """
if op.get_context().dialect.name == "postgresql":
    with op.get_context().autocommit_block():
        op.drop_index("ix_users_created_at", "users", if_exists=True, postgresql_concurrently=True)
        op.create_index(
            "ix_users_created_at", "users", ["created_at"], postgresql_concurrently=True, if_not_exists=True
        )
else:
    op.create_index("ix_users_created_at", "users", ["created_at"])
"""
ROUNDS = {"sqlite": 9, "postgresql": 6}  # PostgreSQL rounds cost more; its CLI round is elsewhere


@pytest.fixture
def history(project_copy: Project) -> list[str]:
    """Revisions oldest first: the users table, a data migration, a new table, an index."""
    return project_copy.extend_history(
        (
            "op.execute(\"INSERT INTO users (username, email) VALUES ('once', 'once@example.com')\")",
            "op.execute(\"DELETE FROM users WHERE username = 'once'\")",
        ),
        ('op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))', 'op.drop_table("audit")'),
        (CONCURRENT_INDEX, 'op.drop_index("ix_users_created_at", "users")'),
    )


NewDatabase = Callable[[], AbstractContextManager[URL]]


@pytest.fixture
def new_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> NewDatabase:
    """A factory of fresh databases, one per round."""
    counter = iter(range(1000))

    def make() -> AbstractContextManager[URL]:
        if backend == "sqlite":
            return nullcontext(URL.create("sqlite", database=str(tmp_path / f"round{next(counter)}.db")))
        return pgserver.fresh_database(request.getfixturevalue("pg_admin_url"))

    return make


def assert_applied_once(url: URL, history: list[str]) -> None:
    assert current_revision(url) == history[-1]
    assert set(recorded_checksums(url)) == set(history)
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM users WHERE username = 'once'")).scalar() == 1
            assert sa.inspect(conn).has_table("audit")
            assert "ix_users_created_at" in {index["name"] for index in sa.inspect(conn).get_indexes("users")}
    finally:
        engine.dispose()


@contextmanager
def database_at(new_database: NewDatabase, project: Project, revision: str | None) -> Iterator[URL]:
    with new_database() as url:
        if revision is not None:
            assert workers.run_together(project.ini, url, 1, target=revision) == [0]
        yield url


@pytest.mark.slow(seconds=5)
def test_concurrent_upgrades_apply_each_migration_once(
    project_copy: Project, history: list[str], new_database: NewDatabase, backend: str
) -> None:
    starts: list[str | None] = [None, history[0], history[1]]  # new, two behind, one behind
    for round_ in range(ROUNDS[backend]):
        with database_at(new_database, project_copy, starts[round_ % 3]) as url:
            assert workers.run_together(project_copy.ini, url, PROCESSES) == [0] * PROCESSES
            assert_applied_once(url, history)


# The CLI round. PostgreSQL's, 8 concurrent `make upgrade`s through an autocommit_block(),
# is in test_postgresql_runs_keep_their_guarantees.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_concurrent_make_upgrades_apply_each_migration_once(
    project_copy: Project, history: list[str], new_database: NewDatabase
) -> None:
    with database_at(new_database, project_copy, None) as url:
        argv, env = project_copy.make_argv("upgrade"), base_env(url)
        processes = [
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(PROCESSES)
        ]
        outputs = [process.communicate(timeout=120) for process in processes]
        assert [p.returncode for p in processes] == [0] * PROCESSES, outputs
        assert_applied_once(url, history)


def test_concurrent_downgrades_revert_each_migration_once(
    project_copy: Project, history: list[str], new_database: NewDatabase
) -> None:
    for _ in range(3):
        with database_at(new_database, project_copy, history[-1]) as url:
            codes = workers.run_together(
                project_copy.ini, url, PROCESSES, action="downgrade", target=history[0]
            )
            assert codes == [0] * PROCESSES
            assert current_revision(url) == history[0]
            assert set(recorded_checksums(url)) == {history[0]}
            engine = engine_for(url)
            try:
                with engine.connect() as conn:
                    assert not sa.inspect(conn).has_table("audit")
                    assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0
            finally:
                engine.dispose()

"""SIGKILL at any moment leaves the old revision or the new one, never a mix.

The migration under test rebuilds the users table (batch mode), creates a
table and fills it row by row, slowly enough that kills land before, inside
and after it. After each kill the database must pass SQLite's integrity check
and equal, in full, either its state before the run or the finished state.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbtools import pgserver
from tests import workers
from tests.helpers import Project, base_env, dump, insert_users

ROWS = 150
SLOW_MIGRATION = f"""
    with op.batch_alter_table("users", recreate="always") as batch:
        batch.add_column(sa.Column("flag", sa.Integer, nullable=True))
    op.create_table("bulk", sa.Column("id", sa.Integer, primary_key=True))
    for i in range({ROWS}):
        op.execute(f"INSERT INTO bulk (id) VALUES ({{i}})")
        time.sleep(0.003)
"""
# The CLI kills land later. PostgreSQL's atomicity is the server's, so it gets fewer kills.
FORKED_DELAYS = {"sqlite": [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45], "postgresql": [0.0, 0.05, 0.2, 0.45]}
CLI_DELAYS = [0.6, 0.9]


@pytest.fixture
def slow_project(project_copy: Project) -> tuple[Project, str]:
    old = project_copy.heads()[0]
    project_copy.add_migration(SLOW_MIGRATION, 'op.drop_table("bulk")', imports="import time")
    return project_copy, old


@contextmanager
def database_at_old(project: Project, old: str, backend: str, tmp_path: Path, request: Any) -> Iterator[URL]:
    """A new database at the old revision, holding rows."""
    if backend == "sqlite":
        url = URL.create("sqlite", database=str(tmp_path / f"crash-{time.monotonic_ns()}.db"))
        setup: Any = nullcontext_url(url)
    else:
        setup = pgserver.fresh_database(request.getfixturevalue("pg_admin_url"))
    with setup as url:
        assert workers.run_together(project.ini, url, 1, target=old) == [0]
        insert_users(url, 30)
        yield url


@contextmanager
def nullcontext_url(url: URL) -> Iterator[URL]:
    yield url


def assert_old_or_new(url: URL, before: dict[str, Any], backend: str) -> str:
    if backend == "sqlite":
        with sqlite3.connect(str(url.database)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    state = dump(url)
    if state == before:
        return "old"
    assert len(state["bulk"]["rows"]) == ROWS, "a partial migration is visible"
    assert [c[0] for c in state["users"]["columns"]][-1] == "flag"
    assert state["users"]["rows"] == [(*row, None) for row in before["users"]["rows"]]
    return "new"


def kill_after(process: Any, delay: float) -> None:
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)


@pytest.mark.slow(seconds=7)
def test_sigkill_at_any_moment_leaves_old_or_new_revision(
    slow_project: tuple[Project, str], backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project, old = slow_project
    outcomes = []
    for delay in FORKED_DELAYS[backend]:
        with database_at_old(project, old, backend, tmp_path, request) as url:
            before = dump(url)
            process = workers.start(project.ini, url)
            kill_after(process, delay)
            process.join()
            outcomes.append(assert_old_or_new(url, before, backend))
    for delay in CLI_DELAYS:
        with database_at_old(project, old, backend, tmp_path, request) as url:
            before = dump(url)
            cli = subprocess.Popen(
                project.alembic_argv("upgrade", "head"),
                env=base_env(url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            kill_after(cli, delay)
            cli.wait()
            outcomes.append(assert_old_or_new(url, before, backend))

            # The next run completes.
            finish = project.make("upgrade", url=url)
            assert finish.returncode == 0, finish.stderr
            assert assert_old_or_new(url, before, backend) == "new"
    # The kills landed mid-migration (old) as well as after it (new).
    assert "old" in outcomes

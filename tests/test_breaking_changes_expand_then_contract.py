"""A column rename from `make migration` runs as expand, then contract, under two application versions.

On PostgreSQL the old version keeps writing ``users.username`` and the new one
``users.login`` through ``make upgrade phase=expand``; both see every write of
the other, with 0 errors, and ``make upgrade`` then drops the old column. A
``make downgrade`` at either point keeps every row, and a backfill killed
halfway resumes and finishes. On SQLite the same two files give today's
one-step rename.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import pgserver
from tests.helpers import Project, engine_for, execute, insert_users, query

ROWS = 3000  # three backfill batches of 1,000
FORK = multiprocessing.get_context("fork")
DIFFERENT = "SELECT count(*) FROM users WHERE login IS DISTINCT FROM username"


@dataclass
class Generated:
    project: Project
    sqlite: URL
    base: str  # the revision before the rename
    expand: Path
    contract: Path


@pytest.fixture
def generated(project_copy: Project, tmp_path: Path) -> Generated:
    """``make migration`` after renaming ``username`` to ``login`` in the model, answered as a rename."""
    sqlite = URL.create("sqlite", database=str(tmp_path / "project" / "app.db"))
    project_copy.migrate(sqlite)
    (base,) = project_copy.heads()
    user = project_copy.root / "models" / "user.py"
    user.write_text(
        user.read_text()
        .replace("    username: Mapped[str]", "    login: Mapped[str]")
        .replace("username={self.username!r}", "login={self.login!r}")
    )
    made = project_copy.cli("migration", "--message=login", "--renames=users.username=login", url=sqlite)
    assert made.returncode == 0, made.stderr
    (expand,) = project_copy.versions.glob("*_login.py")
    (contract,) = project_copy.versions.glob("*_login_contract.py")
    return Generated(project_copy, sqlite, base, expand, contract)


@pytest.fixture
def postgresql(pg_admin_url: URL, generated: Generated) -> Iterator[URL]:
    """A database at the revision before the rename, holding ``ROWS`` users."""
    with pgserver.fresh_database(pg_admin_url) as url:
        generated.project.migrate(url, generated.base)
        insert_users(url, ROWS)
        yield url


def write(url: URL, column: str, stop: Any, results: Any) -> None:
    """An application version: insert a row, read it back, rename another, until ``stop``.

    The new version starts writing once its column exists, as it rolls out
    after ``phase=expand`` has added it. Errors, and values read back other
    than written, are counted.
    """
    engine = engine_for(url, isolation_level="AUTOCOMMIT")
    writes = errors = 0
    first = ""
    n = 0
    try:
        with engine.connect() as conn:
            while not stop.is_set():
                exists = (
                    "SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = :c"
                )
                if not conn.execute(sa.text(exists), {"c": column}).first():
                    time.sleep(0.005)
                    continue
                n += 1
                value = f"{column}-{n}"
                try:
                    inserted = conn.execute(
                        sa.text(f"INSERT INTO users ({column}, email) VALUES (:v, :e) RETURNING id"),
                        {"v": value, "e": f"{value}@example.com"},
                    ).scalar_one()
                    read = conn.execute(sa.text(f"SELECT {column} FROM users WHERE id = :i"), {"i": inserted})
                    conn.execute(
                        sa.text(f"UPDATE users SET {column} = :v WHERE id = :i"),
                        {"v": f"{value}-renamed", "i": 1 + n * 7 % ROWS},
                    )
                    if read.scalar_one() != value:
                        raise AssertionError(f"read back other than {value!r}")
                    writes += 1
                except Exception as exc:  # what the application would see
                    errors += 1
                    first = first or str(exc).splitlines()[0]
    finally:
        engine.dispose()
        results.put((column, writes, errors, first))


class Writers:
    """The old and the new application version, each in a process of its own, writing until stopped."""

    def __init__(self, url: URL) -> None:
        self.results: Any = FORK.Queue()
        self.stops = {column: FORK.Event() for column in ("username", "login")}
        self.processes = {
            column: FORK.Process(target=write, args=(url, column, stop, self.results))
            for column, stop in self.stops.items()
        }
        for process in self.processes.values():
            process.start()

    def stop(self, column: str) -> tuple[int, int, str]:
        self.stops[column].set()
        self.processes[column].join(30)
        found, writes, errors, first = self.results.get(timeout=30)
        assert found == column
        return writes, errors, first


@pytest.mark.slow(seconds=2)
def test_expand_then_contract_under_both_versions_with_downgrades_keeping_rows(
    generated: Generated, postgresql: URL
) -> None:
    project, url = generated.project, postgresql
    assert 'phase = "expand"' in generated.expand.read_text()
    assert 'phase = "contract"' in generated.contract.read_text()
    writers = Writers(url)
    time.sleep(0.1)  # the old version writes before the expand starts
    expanded = project.cli("upgrade", "--phase=expand", url=url)
    assert expanded.returncode == 0, expanded.stderr
    time.sleep(0.2)  # both versions write in the window
    assert query(url, DIFFERENT) == [(0,)]
    old_writes, old_errors, old_first = writers.stop("username")  # the last old instance goes
    assert (old_errors, old_first) == (0, "")
    assert old_writes > 0
    status = project.cli("status", url=url).stdout
    assert "Between expand and contract" in status
    assert "pending, contract" in status

    contracted = project.cli("upgrade", url=url)
    assert contracted.returncode == 0, contracted.stderr
    time.sleep(0.05)
    new_writes, new_errors, new_first = writers.stop("login")
    assert (new_errors, new_first) == (0, "")
    assert new_writes > 0
    names = {
        row[0]
        for row in query(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'")
    }
    assert "username" not in names
    assert "login" in names
    assert project.cli("check", url=url).returncode == 0
    logins = sorted(query(url, "SELECT id, login FROM users"))
    assert len(logins) == ROWS + old_writes + new_writes

    # Back into the window: the old column grown again from the new one, every row kept.
    assert project.cli("downgrade", url=url).returncode == 0
    assert sorted(query(url, "SELECT id, username FROM users")) == logins
    assert query(url, DIFFERENT) == [(0,)]
    # Back before the rename: the old column kept every write of the new version.
    assert project.cli("downgrade", url=url).returncode == 0
    assert sorted(query(url, "SELECT id, username FROM users")) == logins
    assert project.cli("upgrade", url=url).returncode == 0
    assert sorted(query(url, "SELECT id, login FROM users")) == logins


def test_a_killed_backfill_resumes_and_fills_every_row(generated: Generated, postgresql: URL) -> None:
    """Killed between its first and second batch (a pause between batches makes room), then run again."""
    project, url = generated.project, postgresql
    paused = {"MIGRATION_BACKFILL_PAUSE": "0.5"}
    run = FORK.Process(target=lambda: project.cli("upgrade", "--phase=expand", url=url, env=paused))
    run.start()
    backfill = "SELECT pid FROM pg_stat_activity WHERE starts_with(query, 'DO $$') AND wait_event = 'PgSleep'"
    deadline = time.monotonic() + 10
    while not (pids := query(url, backfill)):
        assert time.monotonic() < deadline, "the backfill never paused after its first batch"
        time.sleep(0.01)
    execute(url, f"SELECT pg_terminate_backend({pids[0][0]})")
    run.join(30)
    assert query(url, "SELECT count(login) FROM users") == [(1000,)]  # the first batch only
    status = project.cli("status", url=url).stdout
    assert "half-applied" in status
    resumed = project.cli("upgrade", "--phase=expand", url=url)
    assert resumed.returncode == 0, resumed.stderr
    assert query(url, "SELECT count(login) FROM users") == [(ROWS,)]
    assert query(url, DIFFERENT) == [(0,)]


def test_sqlite_gets_the_one_step_rename_and_phase_is_checked(generated: Generated) -> None:
    project, sqlite = generated.project, generated.sqlite
    insert_users(sqlite, 3)
    refused = project.cli("upgrade", "--phase=contract", url=sqlite)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("FAILED: phase='contract'")
    assert project.cli("upgrade", "--phase=expand", url=sqlite).returncode == 0
    # The expand revision made the whole change: the contract leaves the table as it is.
    table = "SELECT sql FROM sqlite_master WHERE tbl_name = 'users' ORDER BY name"
    expanded = query(sqlite, table)
    assert "login" in str(expanded)
    assert "username" not in str(expanded)
    assert query(sqlite, "SELECT login FROM users ORDER BY id") == [(f"user{i}",) for i in range(3)]
    assert project.cli("upgrade", url=sqlite).returncode == 0
    assert query(sqlite, table) == expanded
    assert project.cli("check", url=sqlite).returncode == 0

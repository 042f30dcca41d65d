"""SQLite backups before a change, and `make restore`, on real database files."""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tests import workers
from tests.helpers import Project, current_revision, dump, execute, failed_line, insert_users

NAME = re.compile(r"^app-(?P<rev>[0-9a-f]+)-\d{8}T\d{6}\.\d{6}Z\.db$")


@pytest.fixture
def db(tmp_path: Path) -> URL:
    return URL.create("sqlite", database=str(tmp_path / "app.db"))


def backups(db: URL) -> list[Path]:
    folder = Path(str(db.database)).parent / "backups"
    return sorted(folder.iterdir()) if folder.exists() else []


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_upgrade_backs_up_the_database_as_it_was(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    first, second = nickname_history
    project_copy.migrate(db, first)
    assert backups(db) == []  # a new database has nothing to lose
    insert_users(db, 25)
    before = dump(db)

    result = project_copy.make("upgrade", url=db)

    assert result.returncode == 0, result.stderr
    (backup,) = backups(db)
    assert NAME.match(backup.name)["rev"] == first  # type: ignore[index]
    assert "Backed up app.db to" in result.stderr
    assert integrity(backup) == "ok"
    assert dump(URL.create("sqlite", database=str(backup))) == before
    assert current_revision(db) == second

    again = project_copy.make("upgrade", url=db)  # nothing pending: no copy
    assert again.returncode == 0
    assert len(backups(db)) == 1


def test_downgrades_are_backed_up_and_only_the_newest_are_kept(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    keep = {"MIGRATION_BACKUP_KEEP": "2"}
    project_copy.migrate(db)
    for _ in range(2):
        assert project_copy.make("downgrade", url=db, env=keep).returncode == 0
        assert project_copy.make("upgrade", url=db, env=keep).returncode == 0

    kept = backups(db)
    assert len(kept) == 2
    # The newest two: before the last downgrade (at head), then before the last upgrade.
    assert [NAME.match(path.name)["rev"] for path in kept] == [nickname_history[1], nickname_history[0]]  # type: ignore[index]


def test_backups_can_be_switched_off(project_copy: Project, nickname_history: list[str], db: URL) -> None:
    project_copy.migrate(db, nickname_history[0])
    assert project_copy.make("upgrade", url=db, env={"MIGRATION_BACKUP_KEEP": "0"}).returncode == 0
    assert backups(db) == []
    line = failed_line(project_copy.make("upgrade", url=db, env={"MIGRATION_BACKUP_KEEP": "many"}))
    assert "MIGRATION_BACKUP_KEEP='many' is not a whole number" in line


def write_until(path: Path, stop: Any) -> None:
    """Application traffic: an insert every few milliseconds until told to stop.

    Not back-to-back: SQLite's busy handler polls, so a writer that never
    pauses could starve the migration of the lock.
    """
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as conn:
        i = 0
        while not stop.is_set():
            # BEGIN IMMEDIATE, as a careful application does: a deferred transaction
            # that holds a read lock when it asks for the write lock gets SQLITE_BUSY
            # at once (SQLite's deadlock avoidance), without waiting.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO users (username, email) VALUES (?, ?)", (f"w{i}", f"w{i}@x"))
            conn.execute("COMMIT")
            i += 1
            time.sleep(0.002)


def test_no_write_slips_in_between_the_backup_and_the_migration(
    project_copy: Project, tmp_path: Path
) -> None:
    """The migration counts the rows it sees; the backup must hold exactly those.

    A writer inserts every few milliseconds throughout. Were the copy taken before
    the run's write lock, rows inserted in between would be in neither.
    """
    first = project_copy.heads()[0]
    project_copy.add_migration(
        'op.execute("CREATE TABLE seen AS SELECT count(*) AS n FROM users")', 'op.drop_table("seen")'
    )
    for round_ in range(6):
        path = tmp_path / f"round{round_}" / "app.db"
        path.parent.mkdir()
        url = URL.create("sqlite", database=str(path))
        assert workers.run_together(project_copy.ini, url, 1, target=first) == [0]
        # A process, not a thread: a forked migration must not inherit an open SQLite connection.
        stop = workers.FORK.Event()
        writer = workers.FORK.Process(target=write_until, args=(path, stop))
        writer.start()
        try:
            assert workers.run_together(project_copy.ini, url, 1) == [0]
        finally:
            stop.set()
            writer.join(timeout=60)
        assert writer.exitcode == 0
        (backup,) = (path.parent / "backups").iterdir()
        with closing(sqlite3.connect(path)) as live, closing(sqlite3.connect(backup)) as copy:
            seen = live.execute("SELECT n FROM seen").fetchone()[0]
            assert seen > 0
            assert copy.execute("SELECT count(*) FROM users").fetchone()[0] == seen


def test_restore_round_trip_keeps_the_replaced_database(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    first, second = nickname_history
    project_copy.migrate(db, first)
    insert_users(db, 40)
    before = dump(db)
    project_copy.migrate(db)
    execute(db, "DELETE FROM users WHERE id % 2 = 0", "UPDATE users SET nickname = 'oops'")
    damaged = dump(db)

    restored = project_copy.make("restore", url=db)

    assert restored.returncode == 0, restored.stderr
    assert "Restored" in restored.stdout
    assert f"it is at revision {first}" in restored.stdout
    assert dump(db) == before
    assert integrity(Path(str(db.database))) == "ok"
    # The database it replaced is a backup now, and is the newest: restoring again undoes the restore.
    replaced = [p for p in backups(db) if NAME.match(p.name)["rev"] == second]  # type: ignore[index]
    assert len(replaced) == 1
    assert dump(URL.create("sqlite", database=str(replaced[0]))) == damaged
    assert project_copy.make("verify", url=db).returncode == 0
    project_copy.migrate(db)
    assert current_revision(db) == second

    undo = project_copy.make("restore", f"file={replaced[0]}", url=db)
    assert undo.returncode == 0, undo.stderr
    assert dump(db)["users"]["rows"] == damaged["users"]["rows"]


@pytest.mark.parametrize(
    "problem", ["corrupt", "not this project", "the database itself", "locked", "none", "postgresql"]
)
def test_restore_refuses_and_changes_nothing(
    project_copy: Project, nickname_history: list[str], db: URL, tmp_path: Path, problem: str
) -> None:
    project_copy.migrate(db, nickname_history[0])
    insert_users(db, 200)
    args: list[str] = []
    if problem != "none":
        project_copy.migrate(db)
    if problem == "corrupt":
        (backup,) = backups(db)
        with closing(sqlite3.connect(backup)) as conn:
            (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'users'").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        data = bytearray(backup.read_bytes())
        header = (root - 1) * page_size
        data[header + 1 : header + 8] = b"\xff" * 7  # the users table's root page: garbage cell pointers
        backup.write_bytes(bytes(data))
    elif problem == "not this project":
        other = tmp_path / "other.db"
        with closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
            conn.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
            conn.commit()
        args = [f"file={other}"]
    elif problem == "the database itself":
        args = [f"file={db.database}"]
    before = dump(db)
    holder = sqlite3.connect(str(db.database), isolation_level=None)
    if problem == "locked":
        holder.execute("BEGIN IMMEDIATE")  # as a migration run holds it
    url = (
        URL.create("postgresql+psycopg", "u", "secret", "127.0.0.1", 1, "d")
        if problem == "postgresql"
        else db
    )

    line = failed_line(project_copy.make("restore", *args, url=url))

    holder.close()
    expected = {
        "corrupt": "nothing was restored",
        "not this project": "is not a database of this project (its revision is 0123456789ab)",
        "the database itself": "is the database itself, not a backup",
        "locked": "is locked by another process",
        "none": "no backups of",
        "postgresql": "is not a SQLite file",
    }[problem]
    assert expected in line
    assert "secret" not in line
    assert dump(db) == before

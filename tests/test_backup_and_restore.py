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
from tests.helpers import Project, as_plain_user, current_revision, dump, execute, failed_line, insert_users

NAME = re.compile(r"^app\.db-(?P<rev>[0-9a-f]+)-\d{8}T\d{6}\.\d{6}Z\.db$")


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

    result = project_copy.cli("upgrade", url=db)

    assert result.returncode == 0, result.stderr
    (backup,) = backups(db)
    assert NAME.match(backup.name)["rev"] == first  # type: ignore[index]
    assert "Backed up app.db to" in result.stderr
    assert integrity(backup) == "ok"
    assert dump(URL.create("sqlite", database=str(backup))) == before
    assert current_revision(db) == second

    again = project_copy.cli("upgrade", url=db)  # nothing pending: no copy
    assert again.returncode == 0
    assert len(backups(db)) == 1


def test_downgrades_are_backed_up_and_only_the_newest_are_kept(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    keep = {"MIGRATION_BACKUP_KEEP": "2"}
    project_copy.migrate(db)
    for _ in range(2):
        assert project_copy.cli("downgrade", url=db, env=keep).returncode == 0
        assert project_copy.cli("upgrade", url=db, env=keep).returncode == 0

    kept = sorted(backups(db), key=lambda path: path.name.rsplit("-", 1)[1])  # by time, oldest first
    assert len(kept) == 2
    # The newest two: before the last downgrade (at head), then before the last upgrade.
    assert [NAME.match(path.name)["rev"] for path in kept] == [nickname_history[1], nickname_history[0]]  # type: ignore[index]


def test_backups_can_be_switched_off(project_copy: Project, nickname_history: list[str], db: URL) -> None:
    project_copy.migrate(db, nickname_history[0])
    assert project_copy.cli("upgrade", url=db, env={"MIGRATION_BACKUP_KEEP": "0"}).returncode == 0
    assert backups(db) == []
    line = failed_line(project_copy.cli("upgrade", url=db, env={"MIGRATION_BACKUP_KEEP": "many"}))
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


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_no_write_slips_in_between_the_backup_and_the_migration(
    project_copy: Project, tmp_path: Path, journal_mode: str
) -> None:
    """The migration counts the rows it sees; the backup must hold exactly those.

    A writer inserts every few milliseconds throughout. Were the copy taken before
    the run's write lock, rows inserted in between would be in neither. In
    rollback-journal mode the copy is of the file's bytes (nothing may change
    it under the lock); in WAL mode, page by page through SQLite.
    """
    first = project_copy.heads()[0]
    project_copy.add_migration(
        'op.execute("CREATE TABLE seen AS SELECT count(*) AS n FROM users")', 'op.drop_table("seen")'
    )
    for round_ in range(3):  # per journal mode
        path = tmp_path / f"round{round_}" / "app.db"
        path.parent.mkdir()
        url = URL.create("sqlite", database=str(path))
        assert workers.run_together(project_copy.ini, url, 1, target=first) == [0]
        execute(url, f"PRAGMA journal_mode = {journal_mode}")
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
        assert integrity(backup) == "ok"
        with closing(sqlite3.connect(path)) as live, closing(sqlite3.connect(backup)) as copy:
            seen = live.execute("SELECT n FROM seen").fetchone()[0]
            assert seen > 0
            assert copy.execute("SELECT count(*) FROM users").fetchone()[0] == seen
            assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


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

    restored = project_copy.cli("restore", url=db)

    assert restored.returncode == 0, restored.stderr
    assert "Restored" in restored.stdout
    assert f"it is at revision {first}" in restored.stdout
    assert dump(db) == before
    assert integrity(Path(str(db.database))) == "ok"
    # The database it replaced is a backup now, and is the newest: restoring again undoes the restore.
    replaced = [p for p in backups(db) if NAME.match(p.name)["rev"] == second]  # type: ignore[index]
    assert len(replaced) == 1
    assert dump(URL.create("sqlite", database=str(replaced[0]))) == damaged
    assert project_copy.cli("verify", url=db).returncode == 0
    project_copy.migrate(db)
    assert current_revision(db) == second

    undo = project_copy.cli("restore", str(replaced[0]), url=db)
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
        args = [str(other)]
    elif problem == "the database itself":
        args = [str(db.database)]
    before = dump(db)
    holder = sqlite3.connect(str(db.database), isolation_level=None)
    if problem == "locked":
        holder.execute("BEGIN IMMEDIATE")  # as a migration run holds it
    url = (
        URL.create("postgresql+psycopg", "u", "secret", "127.0.0.1", 1, "d")
        if problem == "postgresql"
        else db
    )

    line = failed_line(project_copy.cli("restore", *args, url=url))

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


def backed_up_then_emptied(project: Project, first: str, db: URL, rows: int) -> dict[str, Any]:
    """Rows at ``first``, backed up by the upgrade to head, then deleted; the dump the backup holds."""
    project.migrate(db, first)
    insert_users(db, rows)
    wanted = dump(db)
    project.migrate(db)
    execute(db, "DELETE FROM users")
    return wanted


def test_a_failed_restore_keeps_no_copy_and_the_retry_restores_the_wanted_backup(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    wanted = backed_up_then_emptied(project_copy, nickname_history[0], db, 30)
    (backup,) = backups(db)
    # An application's read transaction holds SHARED: the restore's COMMIT cannot get EXCLUSIVE.
    reader = sqlite3.connect(str(db.database), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM users").fetchone()

    line = failed_line(project_copy.cli("restore", url=db))

    reader.close()
    assert "is locked by another process" in line
    assert backups(db) == [backup]  # the damaged state did not become the newest "backup"
    retried = project_copy.cli("restore", url=db)
    assert retried.returncode == 0, retried.stderr
    assert dump(db)["users"]["rows"] == wanted["users"]["rows"]


def test_a_symlinked_database_is_backed_up_and_restored_beside_its_file(
    project_copy: Project, nickname_history: list[str], tmp_path: Path
) -> None:
    real = tmp_path / "data" / "real.db"
    real.parent.mkdir()
    link = tmp_path / "app.db"
    real_url = URL.create("sqlite", database=str(real))
    project_copy.migrate(real_url, nickname_history[0])
    link.symlink_to(real)
    url = URL.create("sqlite", database=str(link))
    insert_users(url, 5)
    wanted = dump(url)
    project_copy.migrate(url)  # takes the backup, as make upgrade does
    execute(url, "DELETE FROM users")

    restored = project_copy.cli("restore", url=url)

    assert restored.returncode == 0, restored.stderr
    assert [p.name.split("-")[0] for p in (real.parent / "backups").iterdir()] == ["real.db"] * 2
    assert dump(url)["users"]["rows"] == wanted["users"]["rows"]
    assert link.is_symlink()


def test_two_databases_with_one_stem_keep_their_backups_apart(
    project_copy: Project, nickname_history: list[str], tmp_path: Path
) -> None:
    urls = {name: URL.create("sqlite", database=str(tmp_path / name)) for name in ("app.db", "app.sqlite3")}
    wanted = {}
    for rows, (name, url) in enumerate(urls.items(), start=1):
        project_copy.migrate(url, nickname_history[0])
        insert_users(url, rows * 10, prefix=f"db{rows}-")
        wanted[name] = dump(url)
        project_copy.migrate(url)  # takes the backup, as make upgrade does
    execute(urls["app.db"], "DELETE FROM users")

    assert project_copy.cli("restore", url=urls["app.db"]).returncode == 0

    assert dump(urls["app.db"]) == wanted["app.db"]
    names = sorted(p.name.rsplit("-", 2)[0] for p in (tmp_path / "backups").iterdir())
    assert names == ["app.db", "app.db", "app.sqlite3"]  # its own backup, and the state it replaced


def test_backups_named_before_the_file_name_was_used_are_still_restored(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    wanted = backed_up_then_emptied(project_copy, nickname_history[0], db, 7)
    (backup,) = backups(db)
    backup.rename(backup.with_name("app-" + backup.name.removeprefix("app.db-")))  # the old naming

    restored = project_copy.cli("restore", url=db)

    assert restored.returncode == 0, restored.stderr
    assert dump(db)["users"]["rows"] == wanted["users"]["rows"]


def test_restore_brings_back_a_full_text_index(project_copy: Project, db: URL) -> None:
    project_copy.migrate(db)
    insert_users(db, 3)
    execute(
        db,
        "CREATE VIRTUAL TABLE notes USING fts5(body)",
        "INSERT INTO notes VALUES ('hello world'), ('goodbye moon')",
    )
    wanted = dump(db)
    keep = Path(str(db.database)).with_name("kept.db")
    with closing(sqlite3.connect(str(db.database))) as live, closing(sqlite3.connect(keep)) as copy:
        live.backup(copy)
    execute(db, "DELETE FROM notes", "DELETE FROM users")

    restored = project_copy.cli("restore", str(keep), url=db)

    assert restored.returncode == 0, restored.stderr
    assert dump(db) == wanted
    with closing(sqlite3.connect(str(db.database))) as conn:
        assert conn.execute("SELECT body FROM notes WHERE notes MATCH 'moon'").fetchall() == [
            ("goodbye moon",)
        ]


def test_a_backup_of_a_wal_database_restores_from_a_read_only_folder(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    project_copy.migrate(db, nickname_history[0])
    execute(db, "PRAGMA journal_mode = WAL")
    insert_users(db, 12)
    wanted = dump(db)
    project_copy.migrate(db)  # takes the backup, as make upgrade does
    (backup,) = backups(db)
    archive = Path(str(db.database)).parent / "archive"  # e.g. a read-only mount of old backups
    archive.mkdir()
    kept = archive / backup.name
    backup.rename(kept)
    archive.chmod(0o555)
    execute(db, "DELETE FROM users")
    try:
        restored = project_copy.make("restore", f"file={kept}", url=db, preexec_fn=as_plain_user)
    finally:
        archive.chmod(0o755)

    assert restored.returncode == 0, restored.stderr
    assert dump(db)["users"]["rows"] == wanted["users"]["rows"]
    assert [p.name for p in archive.iterdir()] == [kept.name]  # no -wal or -shm left beside it


def test_leftovers_of_an_interrupted_backup_are_cleaned_and_never_restored(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    project_copy.migrate(db, nickname_history[0])
    folder = Path(str(db.database)).parent / "backups"
    folder.mkdir()
    partial = folder / f"app.db-{nickname_history[0]}-20990101T000000.000000Z.db.partial"
    partial.write_bytes(b"half a copy")
    assert "no backups of" in failed_line(project_copy.cli("restore", url=db))

    assert project_copy.cli("upgrade", url=db).returncode == 0

    assert not partial.exists()
    assert len(backups(db)) == 1


def test_a_plain_file_named_backups_is_refused_cleanly(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    project_copy.migrate(db, nickname_history[0])
    (Path(str(db.database)).parent / "backups").write_text("not a folder")
    before = dump(db)

    line = failed_line(project_copy.cli("upgrade", url=db))

    assert "is not a directory" in line
    assert "nothing was changed" in line
    assert dump(db) == before


def test_restore_while_another_process_holds_the_exclusive_lock_is_refused(
    project_copy: Project, nickname_history: list[str], db: URL
) -> None:
    project_copy.migrate(db, nickname_history[0])
    project_copy.migrate(db)
    before = dump(db)
    holder = sqlite3.connect(str(db.database), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as a large data migration holds it once it spills
    try:
        line = failed_line(project_copy.cli("restore", url=db))
    finally:
        holder.close()
    assert "is locked by another process" in line
    assert dump(db) == before

"""Put a backup back in place of a SQLite database, atomically.

The live file is not swapped on disk: an application holding it open would go
on writing to the replaced file. Instead, one transaction on the live database
(the migration lock, taken without waiting) drops its objects and recreates
them, rows included, from the attached backup. Other connections see the old
database or the restored one, never a mix, and a crash rolls back.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from alembic.script import ScriptDirectory
from alembic.util import CommandError

from dbtools.paths import SQLITE_HEADER
from dbtools.runtime import backup
from dbtools.target import check_sqlite_file


def choose(database: Path, given: str | None) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise CommandError(f"{path} is not a file; pick one of `ls {backup.folder(database)}`")
        return path
    found = backup.existing(database)
    if not found:
        raise CommandError(f"no backups of {database} in {backup.folder(database)}; nothing to restore")
    return found[0].path


def check_backup(path: Path, script: ScriptDirectory) -> str:
    """Refuse a file that is damaged or not a database of this project; return its revision."""
    with path.open("rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise CommandError(f"{path} is not a SQLite database; nothing was restored")
    with closing(sqlite3.connect(_unchanging(path), uri=True)) as conn:
        try:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            has_version = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            ).fetchone()
            versions = (
                [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
                if has_version
                else []
            )
        except sqlite3.DatabaseError as exc:
            raise CommandError(
                f"{path} is damaged ({exc}); nothing was restored. Pick another backup"
            ) from None
    if result != ["ok"]:
        raise CommandError(
            f"{path} fails PRAGMA integrity_check ({'; '.join(result[:3])}); nothing was restored. "
            "Pick another backup"
        )
    known = {rev.revision for rev in script.walk_revisions()}
    if not versions or not set(versions) <= known:
        raise CommandError(
            f"{path} is not a database of this project (its revision is "
            f"{', '.join(versions) or 'missing'}); nothing was restored"
        )
    return "+".join(versions)


def replace_database(database: Path, source: Path, script: ScriptDirectory) -> tuple[str, Path | None]:
    """Replace ``database`` with ``source``; return the restored revision and the kept old copy."""
    if database.exists() and source.resolve() == database.resolve():
        raise CommandError(f"{source} is the database itself, not a backup; nothing was restored")
    revision = check_backup(source, script)
    check_sqlite_file(database)
    kept: Path | None = None
    try:
        # timeout=0: refuse at once if a migration, or any other connection, is in the way.
        live_uri = database.resolve().as_uri()
        with closing(sqlite3.connect(live_uri, uri=True, timeout=0, isolation_level=None)) as live:
            # SQLite attaches only outside a transaction; the backup is only read.
            live.execute("ATTACH DATABASE ? AS restored", (_unchanging(source),))
            live.execute("BEGIN IMMEDIATE")
            try:
                kept = _keep_current(database, live)
                _replace_contents(live)
                live.execute("COMMIT")
            except BaseException:
                if live.in_transaction:
                    live.execute("ROLLBACK")
                raise
    except BaseException as exc:
        # The replaced state is kept only once the restore has committed: kept from a
        # failed attempt, it would be the newest backup, and a retried `make restore`
        # would put the current state back instead of the backup that was wanted.
        if kept is not None:
            kept.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error) and exc.sqlite_errorname.startswith(
            ("SQLITE_BUSY", "SQLITE_LOCKED")
        ):
            raise CommandError(
                f"{database} is locked by another process (a migration, a writer, or an "
                "application's open transaction); nothing was restored. Retry when it is done"
            ) from None
        if isinstance(exc, sqlite3.Error):
            raise CommandError(
                f"restoring {database} failed ({exc}); it was rolled back, unchanged"
            ) from None
        raise
    return revision, kept


def _unchanging(path: Path) -> str:
    """A URI that reads a backup as the closed file it is: nothing (-wal, -shm) is written beside it."""
    return f"{path.resolve().as_uri()}?mode=ro&immutable=1"


def _keep_current(database: Path, live: sqlite3.Connection) -> Path | None:
    """The database being replaced becomes a backup too (if it holds anything)."""
    if not live.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        return None
    has_version = live.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    heads = [row[0] for row in live.execute("SELECT version_num FROM alembic_version")] if has_version else []
    (mode,) = live.execute("PRAGMA main.journal_mode").fetchone()  # under BEGIN IMMEDIATE, as a run
    return backup.take(database, heads, prune=False, still=mode.lower() in backup.ROLLBACK_JOURNAL_MODES)


def _replace_contents(live: sqlite3.Connection) -> None:
    """Inside the caller's transaction: make ``live`` hold exactly what the attached backup holds.

    A virtual table (FTS5, say) creates its shadow tables itself, so those are
    not created again but filled, row for row, like every ordinary table.
    """
    shadows = {schema: _shadow_tables(live, schema) for schema in ("main", "restored")}
    for kind, name in live.execute(
        "SELECT type, name FROM main.sqlite_master WHERE name NOT LIKE 'sqlite_%' "
        "AND type IN ('view', 'trigger', 'table') ORDER BY type = 'table'"
    ).fetchall():
        if name not in shadows["main"]:  # dropped with their virtual table
            live.execute(f"DROP {kind.upper()} IF EXISTS main.{_quote(name)}")
    objects = live.execute(
        "SELECT type, name, sql FROM restored.sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY type != 'table', rowid"
    ).fetchall()
    for kind, name, sql in objects:
        if name in shadows["restored"]:
            continue
        live.execute(sql)
        if kind == "table" and not sql.upper().startswith("CREATE VIRTUAL"):
            live.execute(f"INSERT INTO main.{_quote(name)} SELECT * FROM restored.{_quote(name)}")
    for name in shadows["restored"]:
        live.execute(f"DELETE FROM main.{_quote(name)}")
        live.execute(f"INSERT INTO main.{_quote(name)} SELECT * FROM restored.{_quote(name)}")
    if live.execute("SELECT 1 FROM restored.sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        live.execute("DELETE FROM main.sqlite_sequence")
        live.execute("INSERT INTO main.sqlite_sequence SELECT * FROM restored.sqlite_sequence")
    (user_version,) = live.execute("PRAGMA restored.user_version").fetchone()
    live.execute(f"PRAGMA main.user_version = {int(user_version)}")


def _shadow_tables(live: sqlite3.Connection, schema: str) -> list[str]:
    rows = live.execute("SELECT name FROM pragma_table_list WHERE schema = ? AND type = 'shadow'", (schema,))
    return [name for (name,) in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

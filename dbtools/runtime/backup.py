"""A consistent copy of a SQLite database before a run changes it (`make restore` puts one back).

A transaction protects against a crash, not against a migration that runs to
success and is wrong. So before a run applies anything to an existing SQLite
file, it copies the file with SQLite's online backup API into ``backups/``
beside it, named after the revision it was at and the UTC time. The copy is
taken through a second connection while the run holds the write lock (a
connection holding the lock cannot back itself up): readers go on, writers
wait, so nothing can slip in between the copy and the migration.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Collection, Iterable
from contextlib import closing, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from dbtools.paths import SQLITE_HEADER
from dbtools.settings import BACKUP_KEEP_VAR, backup_keep

log = logging.getLogger(__name__)
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
PARTIAL = ".partial"  # a copy being written; never a backup
# Journal modes in which only the holder of the write lock ever writes the database file.
ROLLBACK_JOURNAL_MODES = ("delete", "truncate", "persist")


class Backup(NamedTuple):
    path: Path
    revision: str
    taken_at: datetime


def folder(database: Path) -> Path:
    """``backups/`` beside the real file: a symlinked database is backed up and restored in one place."""
    return database.resolve().parent / "backups"


def copy(source: Path, target: Path, *, durable: bool = True, still: bool = False) -> None:
    """Copy a live database, consistently, to a new file.

    ``still``: the caller holds the database's write lock in a rollback-journal
    mode, so no connection can change the file (readers only read it, and a
    writer needs the lock first): a copy of its bytes, made inside the kernel,
    is a consistent snapshot at the speed of the disk. Otherwise (WAL, where a
    reader's checkpoint writes the file; or no lock) SQLite's online backup API
    copies it page by page.

    Written under a temporary name, flushed to disk, then renamed: a failed or
    interrupted copy never looks like a backup, and a finished one survives a
    power cut that follows the migration (``durable``). The partial file needs
    no journal and no syncs of its own (bench/ measures the difference). The
    copy is left in rollback-journal mode even when the source uses WAL, so
    it can be read where nothing may be written beside it.
    """
    partial = target.with_name(target.name + PARTIAL)
    try:
        if target.parent.exists() and not target.parent.is_dir():
            raise NotADirectoryError(f"{target.parent} exists and is not a directory")
        target.parent.mkdir(exist_ok=True)
        if still and shutil.which("cp"):
            _copy_bytes(source, partial)
        else:
            _copy_pages(source, partial)
        if durable:
            _fsync(partial)
        os.replace(partial, target)
        if durable:
            _fsync(target.parent)
    except (OSError, sqlite3.Error) as exc:
        with suppress(OSError):
            partial.unlink(missing_ok=True)
        raise CommandError(
            f"could not back up {source} to {target} ({exc}); nothing was changed. "
            f"Free some space, or set {BACKUP_KEEP_VAR}=0 to migrate without a backup"
        ) from None


def _copy_pages(source: Path, partial: Path) -> None:
    with (
        closing(sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(partial)) as dst,
    ):
        dst.execute("PRAGMA journal_mode = OFF")
        dst.execute("PRAGMA synchronous = OFF")
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")


def _copy_bytes(source: Path, partial: Path) -> None:
    """The file's bytes, copied by ``cp`` (``copy_file_range``: inside the kernel, or shared blocks).

    In another process on purpose: closing any descriptor of the database file
    in this process would drop every POSIX lock the process holds on it, the
    migration's write lock included (SQLite's documented pitfall).
    """
    result = subprocess.run(
        ["cp", "--", str(source), str(partial)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise OSError(result.stderr.strip() or f"cp exited with {result.returncode}")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def take(database: Path, heads: Iterable[str], *, prune: bool = True, still: bool = False) -> Path:
    """Back ``database`` up, named after its file and revision; keep only the newest few.

    The caller holds the database's write lock, so a ``.partial`` copy of it
    left in ``backups/`` is from an interrupted run, and is removed.
    """
    real = database.resolve()
    revision = "+".join(sorted(heads)) or "base"
    stamp = datetime.now(UTC).strftime(STAMP_FORMAT)
    target = folder(real) / f"{real.name}-{revision}-{stamp}.db"
    ours = _prefixes(real)
    for leftover in _named(real, PARTIAL):
        if leftover.name.startswith(ours):
            leftover.unlink(missing_ok=True)
    copy(real, target, still=still)
    log.info("Backed up %s to %s", real.name, target)
    if prune:
        for old in existing(real)[backup_keep() :]:
            old.path.unlink(missing_ok=True)
    return target


def existing(database: Path) -> list[Backup]:
    """This database's backups, newest first.

    Named ``<file name>-<revision>-<UTC time>.db``. Backups made before the
    file name was used were named after its stem, which two databases of one
    folder can share (app.db, app.sqlite3), so those count only while no
    other database in the folder has that stem.
    """
    real = database.resolve()
    found = [backup for prefix in _prefixes(real) for backup in _matching(real, prefix)]
    return sorted(found, key=lambda backup: backup.taken_at, reverse=True)


def _prefixes(database: Path) -> tuple[str, ...]:
    """How this database's backups start: its file name, and its stem where that is its alone."""
    if _stem_shared(database):
        return (f"{database.name}-",)
    return (f"{database.name}-", f"{database.stem}-")


def _matching(database: Path, prefix: str) -> list[Backup]:
    pattern = re.compile(rf"^{re.escape(prefix)}(?P<rev>[^-]+)-(?P<at>\d{{8}}T\d{{6}}\.\d{{6}}Z)\.db$")
    found = []
    for path in _named(database, ".db"):
        match = pattern.match(path.name)
        if match:
            taken_at = datetime.strptime(match["at"], STAMP_FORMAT).replace(tzinfo=UTC)
            found.append(Backup(path, match["rev"], taken_at))
    return found


def _named(database: Path, suffix: str) -> list[Path]:
    directory = folder(database)
    if not directory.is_dir():
        return []
    return [path for path in directory.iterdir() if path.name.endswith(suffix)]


def _stem_shared(database: Path) -> bool:
    """Whether another SQLite database beside this one has its stem (its own -journal/-wal aside)."""
    return any(
        other.stem == database.stem
        and not other.name.startswith(database.name)
        and not _same_file(other, database)  # opening it here would drop a migration's locks on it
        and _is_sqlite(other)
        for other in database.parent.iterdir()
    )


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.samefile(other)
    except OSError:
        return False


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def before_change(
    connection: Connection,
    context: MigrationContext,
    heads: Collection[str],
    database: Path | None,
    *,
    changes: bool = False,
) -> Path | None:
    """Back up an existing SQLite file (``database``; None for memory or a server) about to change.

    ``heads``: the database's revisions, read under the run's write lock.
    A new database (no revision yet) has nothing to lose, and a run with
    nothing pending changes nothing, so neither is copied. Only a run with a
    destination (upgrade, downgrade, stamp) can move; the step function of
    any other (current prints, check autogenerates) must not be called here.
    ``changes``: the run changes the database whatever is pending (skipped migrations run out of order).
    """
    if database is None or backup_keep() == 0:
        return None
    heads = tuple(heads)
    if not heads or context.opts.get("destination_rev") is None or "fn" not in context.opts:
        return None
    if not changes and not context.opts["fn"](heads, context):
        return None
    # The run holds the write lock (BEGIN IMMEDIATE): in a rollback-journal mode the file stands still.
    mode = str(connection.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()
    return take(database.resolve(), heads, still=mode in ROLLBACK_JOURNAL_MODES)

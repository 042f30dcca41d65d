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
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from dbtools.settings import BACKUP_KEEP_VAR, backup_keep

log = logging.getLogger(__name__)
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class Backup:
    path: Path
    revision: str
    taken_at: datetime


def folder(database: Path) -> Path:
    return database.parent / "backups"


def copy(source: Path, target: Path, *, durable: bool = True) -> None:
    """Copy a live database page by page, consistently, to a new file.

    Written under a temporary name, flushed to disk, then renamed: a failed or
    interrupted copy never looks like a backup, and a finished one survives a
    power cut that follows the migration (``durable``). The partial file needs
    no journal and no syncs of its own (bench/ measures the difference).
    """
    partial = target.with_name(target.name + ".partial")
    try:
        target.parent.mkdir(exist_ok=True)
        with (
            closing(sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)) as src,
            closing(sqlite3.connect(partial)) as dst,
        ):
            dst.execute("PRAGMA journal_mode = OFF")
            dst.execute("PRAGMA synchronous = OFF")
            src.backup(dst)
        if durable:
            _fsync(partial)
        os.replace(partial, target)
        if durable:
            _fsync(target.parent)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise CommandError(
            f"could not back up {source} to {target} ({exc}); nothing was changed. "
            f"Free some space, or set {BACKUP_KEEP_VAR}=0 to migrate without a backup"
        ) from None


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def take(database: Path, heads: Iterable[str], *, prune: bool = True) -> Path:
    """Back ``database`` up, named after its revision; keep only the newest few."""
    revision = "+".join(sorted(heads)) or "base"
    stamp = datetime.now(UTC).strftime(STAMP_FORMAT)
    target = folder(database) / f"{database.stem}-{revision}-{stamp}.db"
    copy(database, target)
    log.info("Backed up %s to %s", database.name, target)
    if prune:
        for old in existing(database)[backup_keep() :]:
            old.path.unlink(missing_ok=True)
    return target


def existing(database: Path) -> list[Backup]:
    """This database's backups, newest first."""
    pattern = re.compile(
        rf"^{re.escape(database.stem)}-(?P<rev>[^-]+)-(?P<at>\d{{8}}T\d{{6}}\.\d{{6}}Z)\.db$"
    )
    found = []
    directory = folder(database)
    for path in directory.iterdir() if directory.is_dir() else []:
        match = pattern.match(path.name)
        if match:
            taken_at = datetime.strptime(match["at"], STAMP_FORMAT).replace(tzinfo=UTC)
            found.append(Backup(path, match["rev"], taken_at))
    return sorted(found, key=lambda backup: backup.taken_at, reverse=True)


def before_change(connection: Connection, context: MigrationContext) -> Path | None:
    """Back up an existing SQLite file if this run is about to apply something.

    A new database (no revision yet) has nothing to lose, and a run with
    nothing pending changes nothing, so neither is copied. Only a run with a
    destination (upgrade, downgrade, stamp) can move; the step function of
    any other (current prints, check autogenerates) must not be called here.
    """
    if connection.dialect.name != "sqlite" or backup_keep() == 0:
        return None
    database = connection.engine.url.database
    if not database or database == ":memory:" or connection.engine.url.query.get("mode") == "memory":
        return None
    heads = context.get_current_heads()
    if not heads or context.opts.get("destination_rev") is None or "fn" not in context.opts:
        return None
    if not context.opts["fn"](heads, context):
        return None
    return take(Path(database).resolve(), heads)

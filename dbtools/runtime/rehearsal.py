"""Run the pending migrations for real, time each, keep nothing.

"How long will this take on production data?" is answered by running it on
that data. PostgreSQL rehearses in the live database inside a transaction that
is rolled back: it takes the same locks for the same time the real run would,
so rehearse when a short lock is acceptable. SQLite rehearses on a consistent
copy beside the database, deleted afterwards: rolling back in place would hold
the database's write lock, blocking every writer, for the whole rehearsal.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from dbtools.run import Run
from dbtools.runtime import backup
from dbtools.runtime.locking import locked
from dbtools.target import Target


@dataclass
class Rehearsal:
    where: str
    steps: list[tuple[str, str, float]]  # (revision, message, seconds)

    def lines(self) -> list[str]:
        if not self.steps:
            return [f"Nothing to rehearse: {self.where} has no pending migrations."]
        out = [f"Rehearsed on {self.where}:"]
        width = max(len(message) for _, message, _ in self.steps)
        out += [f"  {rev}  {message:<{width}}  {seconds:8.3f} s" for rev, message, seconds in self.steps]
        total = sum(seconds for _, _, seconds in self.steps)
        out.append(
            f"{len(self.steps)} migration(s) would take {total:.3f} s in all. "
            "Rolled back: the database is exactly as it was."
        )
        return out


def rehearsal(config: Config, database: Target, destination: str) -> Rehearsal:
    with _copy_of(database) as (stand_in, where), locked(stand_in, commit=False) as connection:
        # A copy is thrown away and PostgreSQL rolls back: neither needs a backup.
        run = Run(connection=connection, needs_models=False, backs_up=False)
        try:
            command.upgrade(run.start_with(config), destination)
        except AssertionError as exc:
            revision = _commits_midway(exc)
            if revision is None:
                raise
            raise CommandError(
                f"migration {revision} uses op.get_context().autocommit_block(), which commits "
                "part of the run, and a rehearsal must roll everything back, so it cannot be "
                "rehearsed; nothing was changed. Rehearse up to the revision before it (rev=...)"
            ) from None
    script = ScriptDirectory.from_config(config)
    steps = []
    for revision, seconds in run.timer.steps:
        rev = script.get_revision(revision)
        steps.append((revision, rev.doc if rev is not None else "", seconds))
    return Rehearsal(where, steps)


def _commits_midway(exc: AssertionError) -> str | None:
    """The revision whose autocommit_block() Alembic refused inside our outer transaction."""
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    if not any(frame.f_code.co_name == "autocommit_block" for frame in frames):
        return None
    revisions = [frame.f_globals["revision"] for frame in frames if "down_revision" in frame.f_globals]
    return str(revisions[-1]) if revisions else "(unknown)"


@contextmanager
def _copy_of(database: Target) -> Iterator[tuple[Target, str]]:
    """The database to rehearse on: PostgreSQL itself, or a copy of a SQLite file."""
    path = database.sqlite_path
    if path is None:
        yield database, f"{database.masked}, in a transaction that was rolled back"
        return
    if not database.exists():
        yield database.with_database(":memory:"), f"a new database (as {path} does not exist yet)"
        return
    _remove_abandoned_copies(path)
    prefix = f".{path.name}.rehearsal-{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=path.parent) as scratch:
        copy = Path(scratch) / path.name
        backup.copy(path, copy, durable=False)  # thrown away afterwards
        yield database.with_database(str(copy)), f"a copy of {path}, deleted afterwards"


def _remove_abandoned_copies(path: Path) -> None:
    """Copies left by a killed rehearsal: their folder names a process that is gone."""
    for folder in path.parent.glob(f".{glob.escape(path.name)}.rehearsal-*"):
        owner = re.match(rf"\.{re.escape(path.name)}\.rehearsal-(\d+)-", folder.name)
        if folder.is_dir() and not (owner and _alive(int(owner[1]))):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

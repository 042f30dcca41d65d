"""``make rehearse``: run the pending migrations for real, time each, keep nothing.

"How long will this take on production data?" is answered by running it on
that data. PostgreSQL rehearses in the live database inside a transaction that
is rolled back: it takes the same locks for the same time the real run would,
so rehearse when a short lock is acceptable. SQLite rehearses on a consistent
copy beside the database, deleted afterwards: rolling back in place would hold
the database's write lock, blocking every writer, for the whole rehearsal.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from migrations import backup, locking
from migrations.database import build_engine, check_sqlite_file, mask, sqlite_path
from migrations.errors import friendly_errors
from migrations.timing import StepTimer


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


def rehearse(config: Config, url: URL, destination: str) -> Rehearsal:
    script = ScriptDirectory.from_config(config)
    path = sqlite_path(url)
    with _target(url, path) as (target, where):
        timer = StepTimer()
        engine = build_engine(target)
        try:
            with friendly_errors(target), engine.connect() as connection:
                transaction = connection.begin()
                try:
                    locking.acquire(connection)
                    config.attributes.update(connection=connection, rehearsing=True, timer=timer)
                    command.upgrade(config, destination)
                finally:
                    transaction.rollback()
        finally:
            engine.dispose()
    steps = []
    for revision, seconds in timer.steps:
        rev = script.get_revision(revision)
        steps.append((revision, rev.doc if rev is not None else "", seconds))
    return Rehearsal(where, steps)


@contextmanager
def _target(url: URL, path: Path | None) -> Iterator[tuple[URL, str]]:
    """The database to rehearse on: PostgreSQL itself, or a copy of a SQLite file."""
    if path is None:
        yield url, f"{mask(url)}, in a transaction that was rolled back"
        return
    if not path.exists():
        yield url.set(database=":memory:"), f"a new database (as {path} does not exist yet)"
        return
    check_sqlite_file(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.rehearsal-", dir=path.parent) as scratch:
        copy = Path(scratch) / path.name
        backup.copy(path, copy, durable=False)  # thrown away afterwards
        yield url.set(database=str(copy)), f"a copy of {path}, deleted afterwards"

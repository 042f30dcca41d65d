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

from dbtools import backup, database, project
from dbtools.database import mask, sqlite_path
from dbtools.locking import locked
from dbtools.run import Run


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


def rehearse(config: Config, revision: str = "head") -> None:
    url = project.database_url(config)
    print("\n".join(rehearsal(config, url, revision).lines()))


def rehearsal(config: Config, url: URL, destination: str) -> Rehearsal:
    with _target(url) as (target, where), locked(target, commit=False) as connection:
        # A copy is thrown away and PostgreSQL rolls back: neither needs a backup.
        run = Run(connection=connection, needs_models=False, backs_up=False)
        command.upgrade(run.start_with(config), destination)
    script = ScriptDirectory.from_config(config)
    steps = []
    for revision, seconds in run.timer.steps:
        rev = script.get_revision(revision)
        steps.append((revision, rev.doc if rev is not None else "", seconds))
    return Rehearsal(where, steps)


@contextmanager
def _target(url: URL) -> Iterator[tuple[URL, str]]:
    """The database to rehearse on: PostgreSQL itself, or a copy of a SQLite file."""
    path = sqlite_path(url)
    if path is None:
        yield url, f"{mask(url)}, in a transaction that was rolled back"
        return
    if not database.exists(url):
        yield url.set(database=":memory:"), f"a new database (as {path} does not exist yet)"
        return
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.rehearsal-", dir=path.parent) as scratch:
        copy = Path(scratch) / path.name
        backup.copy(path, copy, durable=False)  # thrown away afterwards
        yield url.set(database=str(copy)), f"a copy of {path}, deleted afterwards"

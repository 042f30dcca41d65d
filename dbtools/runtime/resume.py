"""A migration that commits midway resumes where it stopped instead of failing forever.

An ``autocommit_block()`` (the online forms on PostgreSQL: ``CREATE INDEX
CONCURRENTLY``, ``VALIDATE CONSTRAINT``, ``ALTER TYPE ... ADD VALUE``)
commits what its migration did so far, but Alembic moves ``alembic_version``
only when the migration ends. A run killed or failed after such a commit
left the database between two revisions, and the next run started the
migration from the top: ``ADD COLUMN`` again (DuplicateColumn), ``ADD
CONSTRAINT ... NOT VALID`` again (DuplicateObject), an index that a
constraint already adopted dropped again.

So a migration is cut into units at each block's edges: the transactional
stretch before a block, the block, the stretch after it, and so on. Each
finished unit is recorded in ``alembic_progress`` (revision, direction,
units done):

- a transactional stretch in its own transaction, just before the COMMIT
  that makes it permanent, so the record and the work commit together;
- a block after its last statement; a block is run whole again if it was
  not recorded, which its statements allow (``DROP INDEX CONCURRENTLY IF
  EXISTS`` a leftover, then build; ``VALIDATE`` again; ``ADD VALUE IF NOT
  EXISTS``).

A run that finds a record skips the statements of the units done (Alembic
sends every operation through ``impl._exec``) and carries on from the first
unfinished one. The record goes in the transaction that moves
``alembic_version``. ``make status`` shows it (``half_applied``), and a
downgrade is refused while a migration above it is half-applied: reverting
the one below would strand what the half-applied one committed. PostgreSQL only: on SQLite a migration is one
transaction, and the generated files use blocks only in their PostgreSQL
branches.

pgroll and Reshape keep such a state too (a migration is "started" until
"completed"); Alembic keeps none, and its docs leave resuming to the user.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from dbtools.paths import PROGRESS_TABLE

TABLE = sa.Table(
    PROGRESS_TABLE,
    sa.MetaData(),
    sa.Column("revision", sa.String(32), primary_key=True),
    sa.Column("direction", sa.String(10), primary_key=True),
    sa.Column("units_done", sa.Integer, nullable=False),
)


@dataclass(frozen=True)
class HalfApplied:
    """A migration a run left between two revisions."""

    revision: str
    direction: str  # "upgrade" or "downgrade"
    units_done: int


@dataclass
class _Position:
    """The running migration, its current unit, and how many units a record says are done."""

    revision: str = ""
    direction: str = ""
    unit: int = 0
    done: int = 0

    @property
    def skipping(self) -> bool:
        return self.unit < self.done


def install(context: MigrationContext) -> None:
    """Track and resume this run's migrations (PostgreSQL, connected runs only)."""
    if context.as_sql or context.dialect.name != "postgresql":
        return
    position = _Position()  # anew for each attempt: a retried attempt was rolled back whole
    impl = context.impl
    # The methods Alembic gave this context, kept from the first attempt's install.
    if not hasattr(context, "_untracked"):
        context._untracked = (impl._exec, context.autocommit_block)  # type: ignore[attr-defined]
    execute, block = context._untracked  # type: ignore[attr-defined]

    def tracked_exec(construct: Any, *args: Any, **kwargs: Any) -> Any:
        _follow(context, position)
        if position.skipping:
            return None
        return execute(construct, *args, **kwargs)

    @contextmanager
    def tracked_block() -> Iterator[None]:
        _follow(context, position)
        if not position.skipping:
            # The stretch before the block is done: recorded in its transaction, before the COMMIT.
            _record(_connection(context), position, position.unit + 1)
        position.unit += 1
        with block():
            yield
            if not position.skipping:
                _record(_connection(context), position, position.unit + 1)  # autocommit: on its own
        position.unit += 1

    impl._exec = tracked_exec  # type: ignore[method-assign]
    context.autocommit_block = tracked_block  # type: ignore[method-assign]


def finished(context: MigrationContext, step: MigrationInfo) -> None:
    """``on_version_apply``: the migration is done; its record goes with the version it moved."""
    if context.as_sql or context.dialect.name != "postgresql":
        return
    connection = _connection(context)
    if _exists(connection):
        connection.execute(TABLE.delete().where(TABLE.c.revision == str(step.up_revision_id)))


def half_applied(connection: Connection) -> list[HalfApplied]:
    """Migrations a run left midway, for ``make status`` and ``make downgrade``."""
    if connection.dialect.name != "postgresql" or not _exists(connection):
        return []
    rows = connection.execute(sa.select(TABLE).order_by(TABLE.c.revision))
    return [HalfApplied(row.revision, row.direction, row.units_done) for row in rows]


def _follow(context: MigrationContext, position: _Position) -> None:
    """Notice a new migration starting: read how far an earlier run got with it."""
    step = _running_step()
    script = getattr(step, "revision", None)  # a RevisionStep's Script; a stamp runs no migration
    if script is None:
        return
    direction = "upgrade" if step.is_upgrade else "downgrade"
    revision = str(script.revision)  # the migration running, in either direction
    if (revision, direction) == (position.revision, position.direction):
        return
    position.revision, position.direction, position.unit = revision, direction, 0
    connection = _connection(context)
    position.done = 0
    if direction == "downgrade":
        _refuse_below(connection)
    if _exists(connection):
        found = connection.execute(
            sa.select(TABLE.c.units_done).where(TABLE.c.revision == revision, TABLE.c.direction == direction)
        ).scalar()
        position.done = int(found or 0)


def _refuse_below(connection: Connection) -> None:
    """Reverting the migration below a half-applied one would leave that one's changes stranded."""
    for half in half_applied(connection):
        if half.direction == "upgrade":
            raise CommandError(
                f"migration {half.revision} is half-applied ({half.units_done} of its steps committed, "
                "alembic_version not moved yet); nothing was changed. `make upgrade` completes it "
                "(it resumes where it stopped); downgrade after that"
            )


def _running_step() -> Any:
    """The ``MigrationStep`` Alembic's ``run_migrations`` is running (its loop variable ``step``).

    Alembic hands the migration nothing that names it; its loop does, and its
    version is pinned (requirements.txt). A test resumes a killed run, so a
    rename of that variable fails the suite, not a user's deploy.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "run_migrations" and "step" in frame.f_locals:
            return frame.f_locals["step"]
        frame = frame.f_back
    return None


def _record(connection: Connection, position: _Position, units: int) -> None:
    if not _exists(connection):
        TABLE.create(connection, checkfirst=True)
    where = (TABLE.c.revision == position.revision, TABLE.c.direction == position.direction)
    updated = connection.execute(TABLE.update().where(*where).values(units_done=units))
    if not updated.rowcount:
        connection.execute(
            TABLE.insert().values(revision=position.revision, direction=position.direction, units_done=units)
        )


def _exists(connection: Connection) -> bool:
    return connection.exec_driver_sql(f"SELECT to_regclass('{PROGRESS_TABLE}') IS NOT NULL").scalar() is True


def _connection(context: MigrationContext) -> Connection:
    assert context.connection is not None  # connected runs only (install returns on as_sql)
    return context.connection

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
``alembic_version``. ``make status`` shows it (``half_applied``). One
``make downgrade`` reverts it alone (``install(reverts_half_applied=True)``);
a downgrade past it is refused, since reverting the one below would strand
what the half-applied one committed. PostgreSQL only: on SQLite a migration is one
transaction, and the generated files use blocks only in their PostgreSQL
branches.

pgroll and Reshape keep such a state too (a migration is "started" until
"completed"); Alembic keeps none, and its docs leave resuming to the user.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from types import FrameType
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex

from dbtools.errors import first_line, sqlstate
from dbtools.paths import PROGRESS_TABLE

log = logging.getLogger(__name__)

# env.py imports this module for every run, but only PostgreSQL's use it: the table is built
# on first use, and no record here is a dataclass (each costs a no-op run its generated
# methods' compile at import; bench/).


@cache
def table() -> sa.Table:
    return sa.Table(
        PROGRESS_TABLE,
        sa.MetaData(),
        sa.Column("revision", sa.String(32), primary_key=True),
        sa.Column("direction", sa.String(10), primary_key=True),
        sa.Column("units_done", sa.Integer, nullable=False),
        # The index an unfinished block was building concurrently: INVALID if the build was cut.
        sa.Column("building", sa.String(63)),
    )


class HalfApplied(NamedTuple):
    """A migration a run left between two revisions."""

    revision: str
    direction: str  # "upgrade" or "downgrade"
    units_done: int
    building: str | None = None  # an index whose concurrent build it had started


class _Position:
    """The running migration, its current unit, and how many units a record says are done."""

    def __init__(self) -> None:
        self.revision = ""
        self.direction = ""
        self.unit = 0
        self.done = 0
        # A half-applied migration this run reverts: its downgrade skips what was never applied.
        self.reverting = ""

    @property
    def skipping(self) -> bool:
        return self.unit < self.done


def install(
    context: MigrationContext, script: ScriptDirectory, *, reverts_half_applied: bool = False
) -> None:
    """Track and resume this run's migrations (PostgreSQL, connected runs only).

    ``reverts_half_applied`` (``make downgrade``, one step): a migration left
    half-applied above the database's revision is the step to revert. The
    version is moved onto it in this run's transaction, and its downgrade
    skips each drop of what its upgrade never got to (``_tolerant``).
    """
    if context.as_sql or context.dialect.name != "postgresql":
        return
    position = _Position()  # anew for each attempt: a retried attempt was rolled back whole
    if reverts_half_applied:
        position.reverting = _onto_half_applied(context, script)
    impl = context.impl
    # The methods Alembic gave this context, kept from the first attempt's install.
    if not hasattr(context, "_untracked"):
        context._untracked = (impl._exec, context.autocommit_block)  # type: ignore[attr-defined]
    execute, block = context._untracked  # type: ignore[attr-defined]

    def tracked_exec(construct: Any, *args: Any, **kwargs: Any) -> Any:
        _follow(context, position)
        if position.skipping:
            return None
        if position.direction == "downgrade" and position.revision == position.reverting:
            return _tolerant(_connection(context), lambda: execute(construct, *args, **kwargs))
        building = _concurrent_build(construct)
        if building and position.direction == "upgrade":
            _record(_connection(context), position, position.unit, building)  # autocommit: on its own
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
    if not _exists(connection):
        return
    revision = str(step.up_revision_id)
    if not step.is_upgrade:
        # A half-applied migration reverted: an index its cut build left INVALID goes too.
        for half in half_applied(connection):
            if half.revision == revision and half.direction == "upgrade" and half.building:
                quoted = connection.dialect.identifier_preparer.quote(half.building)
                connection.exec_driver_sql(f"DROP INDEX IF EXISTS {quoted}")
    progress = table()
    connection.execute(progress.delete().where(progress.c.revision == revision))


def half_applied(connection: Connection) -> list[HalfApplied]:
    """Migrations a run left midway, for ``make status`` and ``make downgrade``."""
    if connection.dialect.name != "postgresql" or not _exists(connection):
        return []
    progress = table()
    rows = connection.execute(sa.select(progress).order_by(progress.c.revision))
    return [HalfApplied(row.revision, row.direction, row.units_done, row.building) for row in rows]


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
    if direction == "downgrade" and revision != position.reverting:
        _refuse_below(connection)
    if _exists(connection):
        progress = table()
        found = connection.execute(
            sa.select(progress.c.units_done).where(
                progress.c.revision == revision, progress.c.direction == direction
            )
        ).scalar()
        position.done = int(found or 0)


# What a drop of something never created fails with: undefined table, column, object.
NEVER_CREATED = ("42P01", "42703", "42704")


def _onto_half_applied(context: MigrationContext, script: ScriptDirectory) -> str:
    """Move the version onto the half-applied migration just above it; its revision, or "" if none."""
    heads = set(context.get_current_heads())
    for half in half_applied(_connection(context)):
        found = script.get_revision(half.revision)
        down = found.down_revision if found is not None else None
        below = {down} if isinstance(down, str) else set(down or ())
        if half.direction == "upgrade" and below == heads:
            context.stamp(script, half.revision)
            log.info("reverting %s, half-applied: what its upgrade never got to is skipped", half.revision)
            return half.revision
    return ""


def _tolerant(connection: Connection, run: Any) -> Any:
    """Run one statement of a half-applied migration's downgrade; a drop of what never was is skipped.

    In a transaction, under a savepoint, so the skipped statement's error
    leaves the rest of the transaction usable.
    """
    autocommit = connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    savepoint = None if autocommit else connection.begin_nested()
    try:
        result = run()
    except DBAPIError as exc:
        if savepoint is not None:
            savepoint.rollback()
        if sqlstate(exc) not in NEVER_CREATED:
            raise
        log.info("skipped, never applied: %s", first_line(exc))
        return None
    if savepoint is not None:
        savepoint.commit()
    return result


def _refuse_below(connection: Connection) -> None:
    """Reverting the migration below a half-applied one would leave that one's changes stranded."""
    for half in half_applied(connection):
        if half.direction == "upgrade":
            raise CommandError(
                f"migration {half.revision} is half-applied ({half.units_done} of its steps committed, "
                "alembic_version not moved yet); nothing was changed. `make upgrade` completes it "
                "(it resumes where it stopped); `make downgrade` (one step) reverts it alone"
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


def _record(connection: Connection, position: _Position, units: int, building: str | None = None) -> None:
    progress = table()
    if not _exists(connection):
        progress.create(connection, checkfirst=True)
    where = (progress.c.revision == position.revision, progress.c.direction == position.direction)
    values = {"units_done": units, "building": building}
    updated = connection.execute(progress.update().where(*where).values(**values))
    if not updated.rowcount:
        connection.execute(
            progress.insert().values(revision=position.revision, direction=position.direction, **values)
        )


def _concurrent_build(construct: Any) -> str | None:
    """The index a ``CREATE INDEX CONCURRENTLY`` (as ``op.create_index`` renders it) builds."""
    if isinstance(construct, CreateIndex) and construct.element.dialect_options["postgresql"]["concurrently"]:
        return str(construct.element.name)
    return None


def _exists(connection: Connection) -> bool:
    return connection.exec_driver_sql(f"SELECT to_regclass('{PROGRESS_TABLE}') IS NOT NULL").scalar() is True


def _connection(context: MigrationContext) -> Connection:
    assert context.connection is not None  # connected runs only (install returns on as_sql)
    return context.connection

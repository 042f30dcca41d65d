"""``make upgrade out_of_order=1``: run the migrations a database skipped, below its current revision.

A branch re-pointed after a database applied it leaves that database at a
revision whose new ancestors never ran there (``checksums.skipped_below``).
Like Flyway's ``outOfOrder``, such a migration may run late, but only when it
and the migrations that already ran after it touch different objects (columns,
constraints, indexes, types; the same table is fine): otherwise running it
late would not give what running it in order gives.

What a migration touches is read from its operations, not its text: its
``upgrade()`` runs against an offline migration context whose operations are
recorded instead of executed. An operation whose objects cannot be read (raw
SQL, a custom operation, a migration that needs a connection) refuses.

Each skipped migration then runs in the run's own transaction through the
run's migration context, leaving ``alembic_version`` where it is (at the
later revision), and its checksum is recorded as any run records it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from alembic.operations import BatchOperations, Operations
from alembic.operations import ops as alembic_ops
from alembic.operations.batch import BatchOperationsImpl as _BatchImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from alembic.util import CommandError
from sqlalchemy import Enum
from sqlalchemy.engine import Connection

from dbtools.runtime import checksums

log = logging.getLogger(__name__)

# An object a migration touches: ("column", table, name), ("index", name), ("table", table), ...
Touched = tuple[str, ...]


class Unreadable(Exception):
    """What a migration touches cannot be read from its operations."""


def touched_by(rev: Script, dialect_name: str, *, runs_late: bool = False) -> set[Touched]:
    """The objects ``rev``'s upgrade() touches, read from the operations it invokes.

    ``runs_late``: ``rev`` is to run inside another run's transaction, so it may not commit midway.
    """
    recorded: list[alembic_ops.MigrateOperation] = []
    commits: list[bool] = []

    def record(self: Any, operation: alembic_ops.MigrateOperation) -> None:
        recorded.append(operation)

    @contextmanager
    def autocommit_block() -> Iterator[None]:
        commits.append(True)
        yield

    context = MigrationContext.configure(
        dialect_name=dialect_name, opts={"as_sql": True, "output_buffer": io.StringIO()}
    )
    context.autocommit_block = autocommit_block  # type: ignore[method-assign]
    try:
        with _recording(record), Operations.context(context):
            rev.module.upgrade()
    except Exception as exc:  # e.g. op.get_bind(): offline there is no connection
        raise Unreadable(
            f"cannot be read without a database ({type(exc).__name__} in its upgrade())"
        ) from exc
    if commits and runs_late:
        raise Unreadable(
            "commits midway (autocommit_block()), so it cannot run inside this run's transaction"
        )
    found: set[Touched] = set()
    for operation in recorded:
        found |= _objects(operation)
    return found


@contextmanager
def _recording(record: Any) -> Iterator[None]:
    """Operations (batch ones too) are recorded, not executed; a batch has nothing to flush."""
    saved = Operations.invoke, BatchOperations.invoke
    Operations.invoke = BatchOperations.invoke = record  # type: ignore[method-assign]
    flush = _BatchImpl.flush
    _BatchImpl.flush = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Operations.invoke, BatchOperations.invoke = saved  # type: ignore[method-assign]
        _BatchImpl.flush = flush  # type: ignore[method-assign]


def _types(column_type: Any) -> set[Touched]:
    name = getattr(column_type, "name", None)
    return {("type", name)} if isinstance(column_type, Enum) and name else set()


def _objects(operation: alembic_ops.MigrateOperation) -> set[Touched]:
    op = alembic_ops
    if isinstance(operation, op.AddColumnOp):
        return {("column", operation.table_name, operation.column.name)} | _types(operation.column.type)
    if isinstance(operation, op.DropColumnOp):
        return {("column", operation.table_name, operation.column_name)}
    if isinstance(operation, op.AlterColumnOp):
        found = {("column", operation.table_name, operation.column_name)} | _types(operation.modify_type)
        if operation.modify_name:
            found.add(("column", operation.table_name, operation.modify_name))
        return found
    if isinstance(operation, (op.CreateIndexOp, op.DropIndexOp)):
        return {("index", str(operation.index_name))}
    if isinstance(operation, (op.AddConstraintOp, op.DropConstraintOp)):
        name = getattr(operation, "constraint_name", None)
        if name is None:
            raise Unreadable("adds or drops a constraint without a name")
        return {("constraint", str(name))}
    if isinstance(operation, (op.CreateTableOp, op.DropTableOp)):
        return {("table", operation.table_name)}
    if isinstance(operation, op.RenameTableOp):
        return {("table", operation.table_name), ("table", operation.new_table_name)}
    if isinstance(operation, (op.CreateTableCommentOp, op.DropTableCommentOp)):
        return {("table comment", operation.table_name)}
    if isinstance(operation, op.BulkInsertOp):
        return {("rows", operation.table.name)}
    what = "raw SQL (op.execute)" if isinstance(operation, op.ExecuteSQLOp) else type(operation).__name__
    raise Unreadable(f"runs {what}, whose objects cannot be read")


def describe(item: Touched) -> str:
    kind, *names = item
    return f"{kind} {'.'.join(names)}"


def _clash(one: set[Touched], other: set[Touched]) -> Touched | None:
    """An object both touch; a whole table (created, dropped, renamed) clashes with anything on it."""
    common = sorted(one & other)
    if common:
        return common[0]
    for first, second in ((one, other), (other, one)):
        tables = {item[1] for item in first if item[0] == "table"}
        for item in sorted(second):
            if item[0] in ("column", "table comment", "rows") and item[1] in tables:
                return item
    return None


def check_disjoint(skipped: Sequence[Script], applied: Sequence[Script], dialect_name: str) -> None:
    """Refuse when a skipped migration and one that ran after it touch the same object."""
    record = {rev.revision for rev in applied} - {rev.revision for rev in skipped}
    above = checksums.skipped_below(applied, record)
    scripts = {rev.revision: rev for rev in applied}
    reads: dict[str, set[Touched]] = {}

    def read(rev: Script) -> set[Touched]:
        if rev.revision not in reads:
            try:
                reads[rev.revision] = touched_by(rev, dialect_name, runs_late=rev in skipped)
            except Unreadable as exc:
                raise CommandError(
                    f"cannot apply {skipped_names} out of order: migration {rev.revision} {exc}; "
                    "nothing was changed. Restore a backup from before the re-pointed migration ran, "
                    "or downgrade it with the files as they were, then `make upgrade`"
                ) from None
        return reads[rev.revision]

    skipped_names = ", ".join(rev.revision for rev in skipped)
    for rev in skipped:
        for later in above.get(rev.revision, []):
            clash = _clash(read(rev), read(scripts[later]))
            if clash is not None:
                raise CommandError(
                    f"cannot apply {rev.revision} out of order: it and {later}, which already ran here, "
                    f"both touch {describe(clash)}; nothing was changed. Restore a backup from before "
                    f"{later} ran, or downgrade it with the files as they were, then `make upgrade`"
                )


def apply(connection: Connection, context: MigrationContext, skipped: Sequence[Script]) -> None:
    """Run each skipped migration in the run's transaction, oldest first; alembic_version stays put."""
    for rev in skipped:
        log.info(
            "Running upgrade %s out of order (below %s)", rev.revision, ", ".join(context.get_current_heads())
        )
        with Operations.context(context):
            rev.module.upgrade()
        checksums.record_applied(connection, rev)

"""``MIGRATION_BACKENDS=sqlite``: what SQLite cannot hold is refused by name, not lost.

A project that never deploys to PostgreSQL compares its models with SQLite
alone (no ``make schema`` needed for PostgreSQL's facts). SQLite keeps no
comments, has no identity columns or sequences, and ignores PostgreSQL's
index and table options and types; autogenerate against it would write
nothing for them and ``make check`` would call the models and the database
equal. So each such use in the models stops ``make migration``, ``make
check`` and ``make status`` with one line naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.util import CommandError, PriorityDispatchResult

from dbtools import settings

POSTGRESQL_TYPES = "sqlalchemy.dialects.postgresql"


def cannot_hold(metadata: sa.MetaData) -> list[str]:
    """Each thing in the models SQLite cannot hold, as ``where: what``."""
    return [f"{where}: {what}" for table in metadata.sorted_tables for where, what in _in_table(table)]


def _in_table(table: sa.Table) -> Iterator[tuple[str, str]]:
    if table.comment:
        yield table.name, "a comment"
    if table.schema:
        yield table.name, f"schema {table.schema!r}"
    yield from ((table.name, option) for option in _postgresql_options(table))
    for column in table.columns:
        where = f"{table.name}.{column.name}"
        if column.comment:
            yield where, "a comment"
        if column.identity is not None:
            yield where, "Identity()"
        if isinstance(column.default, sa.Sequence):
            yield where, f"Sequence({column.default.name!r})"
        if type(column.type).__module__.startswith(POSTGRESQL_TYPES):
            yield where, f"PostgreSQL's type {type(column.type).__name__}"
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        yield from ((f"{table.name} index {index.name}", option) for option in _postgresql_options(index))


def _postgresql_options(item: sa.Table | sa.Index) -> list[str]:
    given = item.dialect_kwargs
    return [name for name in sorted(given) if name.startswith("postgresql_") and given[name] is not None]


def refuse_what_sqlite_cannot_hold(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Any
) -> Any:
    """Run first: with ``MIGRATION_BACKENDS=sqlite``, refuse the models' PostgreSQL-only parts."""
    metadata = autogen_context.metadata
    if settings.sqlite_only() and isinstance(metadata, sa.MetaData):
        found = cannot_hold(metadata)
        if found:
            raise CommandError(
                f"{settings.BACKENDS_VAR}=sqlite, but SQLite cannot hold what the models give: "
                f"{'; '.join(found)}. Remove it from the models, or unset {settings.BACKENDS_VAR} "
                "to deploy to PostgreSQL too"
            )
    return PriorityDispatchResult.CONTINUE

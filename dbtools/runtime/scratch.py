"""Migrate a database nobody uses, for views that must not touch the real one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import make_url
from sqlalchemy.engine import Connection, Engine

from dbtools.runtime import rebuilds
from dbtools.runtime.options import context_options
from dbtools.target import Target


def upgrade(connection: Connection, script: ScriptDirectory, destination: str = "heads") -> MigrationContext:
    """Run the migrations up to ``destination`` (every head) in one transaction, as env.py would.

    env.py's locks, guards and checksums are for real databases; a scratch one
    needs only the migrations themselves, with the same context options (the
    naming convention, so a constraint gets the name ``make upgrade`` gives it).
    The transaction is the migration context's own, so a migration's
    ``autocommit_block()`` can commit it.
    """

    def steps(revision: Sequence[str], _context: MigrationContext) -> Any:
        # As alembic.command.upgrade does; its annotation says str, it takes the heads.
        return script._upgrade_revs(destination, revision)  # type: ignore[arg-type]

    rebuilds.install()  # as env.py does: SQLite's rebuilds leave generated columns to SQLite
    context = MigrationContext.configure(
        connection, opts={"fn": steps, "script": script, **context_options()}
    )
    with (
        rebuilds.keep_expression_indexes(connection),
        context.begin_transaction(),
        Operations.context(context),
    ):
        context.run_migrations()
    return context


def memory_engine() -> Engine:
    """An in-memory SQLite database that lives as long as its one connection."""
    return Target.of(make_url("sqlite://")).engine()

"""SQLite's table rebuilds (Alembic's batch mode) that leave generated columns to SQLite.

A rebuild creates the new table, copies the rows with ``INSERT INTO new (...)
SELECT ... FROM old``, drops the old table and renames the new one. Alembic
copies every column, and SQLite refuses to write a generated column
(``cannot INSERT into generated column``): a ``Computed`` column is left out
of the copy, and SQLite computes it again from the columns copied.

Alembic has no option for this; it looks up its implementation of a dialect
by name, so ``install()`` puts this one in place of its SQLite one for the
process. ``migrations/env.py`` and ``dbtools.runtime.scratch`` call it, so
every run of the migrations rebuilds this way.
"""

from __future__ import annotations

from alembic.ddl import impl, sqlite
from alembic.operations.batch import ApplyBatchImpl
from sqlalchemy.schema import Computed, Table


class SQLiteImpl(sqlite.SQLiteImpl):
    """Alembic's SQLite implementation, whose rebuilds do not copy generated columns."""

    def prep_table_for_batch(self, batch_impl: ApplyBatchImpl, table: Table) -> None:
        super().prep_table_for_batch(batch_impl, table)
        for column in table.columns:
            if isinstance(column.server_default, Computed) and column.name in batch_impl.column_transfers:
                # A transfer without "expr" is one the copy does not write (as for an added column).
                batch_impl.column_transfers[column.name].pop("expr", None)


def install() -> None:
    """Alembic's SQLite migration contexts use ``SQLiteImpl`` from now on (idempotent).

    Alembic's registry of implementations by dialect name is private; a
    subclass declaring ``__dialect__`` would register itself the same way,
    but as a side effect of importing this module.
    """
    impl._impls[sqlite.SQLiteImpl.__dialect__] = SQLiteImpl

"""SQLite's table rebuilds (Alembic's batch mode), made to keep what SQLAlchemy cannot see.

Alembic's batch mode rebuilds a SQLite table by reflecting it, creating
``_alembic_tmp_<table>`` from what it saw, copying the rows with ``INSERT INTO
new (...) SELECT ... FROM old``, dropping the table and renaming the copy.
Two things were lost on the way, and both are kept here:

- Generated columns: Alembic copies every column, and SQLite refuses to write
  a generated one (``cannot INSERT into generated column``). ``SQLiteImpl``
  leaves a ``Computed`` column out of the copy, and SQLite computes it again.
  Alembic has no option for this; it looks up its implementation of a dialect
  by name, so ``install()`` puts this one in place of its SQLite one.
- Expression indexes: SQLAlchemy does not reflect an index on an expression
  (``lower(email)``); it only warns. So every rebuild silently dropped such an
  index (a unique one then let duplicates in), and a later downgrade failed on
  ``no such index``. ``keep_expression_indexes`` remembers a table's
  expression indexes as the rebuild begins and creates them again, by their
  own SQL, once the copy has taken the table's name. A rebuild that dropped a
  column such an index uses fails there, inside the run's transaction: drop
  the index first (autogenerate does).

``migrations/env.py`` and ``dbtools.runtime.scratch`` use both, so every run
of the migrations rebuilds this way.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.ddl import impl, sqlite
from alembic.operations.batch import ApplyBatchImpl
from sqlalchemy import event
from sqlalchemy.engine import Connection
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


# A rebuild's statements name Alembic's temporary table, always spelled so; the patterns
# compile on the first such statement (re caches them), which a run without a rebuild never sends.
_TEMPORARY = "_alembic_tmp_"
_BEGIN = r'(?i)^\s*CREATE TABLE "?_alembic_tmp_(?P<table>\w+)"?\s*\('
_END = r'(?i)^\s*ALTER TABLE "?_alembic_tmp_(?P<table>\w+)"? RENAME TO "?(?P<new>\w+)"?\s*$'
EXPRESSION_INDEXES = (
    "SELECT m.sql FROM sqlite_master AS m WHERE m.type = 'index' AND m.tbl_name = ? AND m.sql IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM pragma_index_info(m.name) AS i WHERE i.name IS NULL) ORDER BY m.name"
)

# The batch's reflection warns about each one; they are kept, so the warning would mislead.
warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")


@contextmanager
def keep_expression_indexes(connection: Connection) -> Iterator[None]:
    """While in the block, Alembic's SQLite table rebuilds on ``connection`` keep expression indexes."""
    if connection.dialect.name != "sqlite":
        yield
        return
    kept: dict[str, list[str]] = {}

    def before(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if _TEMPORARY not in statement:  # every statement of the run passes here
            return
        begun = re.match(_BEGIN, statement)
        if begun is not None:
            rows = cursor.connection.execute(EXPRESSION_INDEXES, (begun["table"],)).fetchall()
            kept[begun["table"]] = [sql for (sql,) in rows]

    def after(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if _TEMPORARY not in statement:
            return
        ended = re.match(_END, statement)
        if ended is not None:
            for sql in kept.pop(ended["table"], []):
                cursor.connection.execute(sql)

    event.listen(connection, "before_cursor_execute", before)
    event.listen(connection, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(connection, "before_cursor_execute", before)
        event.remove(connection, "after_cursor_execute", after)

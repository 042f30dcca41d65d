"""What Alembic does not compare about indexes: expression indexes on SQLite.

- SQLAlchemy cannot reflect SQLite's expression indexes
  (``func.lower(User.email)``), so Alembic skips the models' ones there,
  with a warning: a new one was never generated. Here they are read from
  ``sqlite_master`` and compared by name and by their SQL.

An expression index is created after its table's batch and dropped before
it (``split``): a batch that rebuilds a SQLite table reflects it first, and
cannot see such an index to drop it or to create it. The rebuild itself
keeps the expression indexes it cannot see (``dbtools.runtime.rebuilds``).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from alembic.util.sqla_compat import is_expression_index
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.schema import CreateIndex

SQLITE: Dialect = sqlite.dialect()
_LITERAL = re.compile(r"('(?:[^']|'')*')")
_CREATE_INDEX = re.compile(
    r"^\s*CREATE\s+(?P<unique>UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON\s+\S+?\s*\(",
    re.IGNORECASE,
)

# Both warn about what compare_expression_indexes compares itself on SQLite.
warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")


# --- normalising SQL text ---------------------------------------------------


def normalised(sql: str) -> str:
    """SQL as a comparison key: no parentheses, quotes on names, case or spacing outside literals."""
    parts = _LITERAL.split(sql)
    for i in range(0, len(parts), 2):  # outside string literals
        parts[i] = re.sub(r'[\s()"`\[\]]', "", parts[i].lower())
    return "".join(parts)


# --- comparators -----------------------------------------------------------


def compare_expression_indexes(
    autogen_context: AutogenContext,
    modify_table_ops: ops.ModifyTableOps,
    schema: str | None,
    table_name: str,
    conn_table: sa.Table | None,
    metadata_table: sa.Table | None,
) -> Any:
    """SQLite's expression indexes, which Alembic cannot see there, compared by name and SQL."""
    dialect, connection = autogen_context.dialect, autogen_context.connection
    if dialect is None or dialect.name != "sqlite" or connection is None:
        return PriorityDispatchResult.CONTINUE
    stored = expression_indexes(connection, table_name) if conn_table is not None else {}
    wanted = {
        str(index.name): index
        for index in (metadata_table.indexes if metadata_table is not None else ())
        if is_expression_index(index)
    }
    for name in sorted(stored.keys() | wanted.keys()):
        index = wanted.get(name)
        sql = stored.get(name)
        if index is not None and sql is not None and normalised(sql) == normalised(create_sql(index)):
            continue
        if sql is not None:
            assert conn_table is not None
            old = parse_index(_detached(conn_table), name, sql)
            modify_table_ops.ops.append(ops.DropIndexOp.from_index(old))
        if index is not None:
            modify_table_ops.ops.append(ops.CreateIndexOp.from_index(index))
    return PriorityDispatchResult.CONTINUE


def expression_indexes(connection: Connection, table: str) -> dict[str, str]:
    """SQLite: each index on ``table`` with an expression (which SQLAlchemy skips), and its SQL."""
    rows = connection.exec_driver_sql(
        "SELECT m.name, m.sql FROM sqlite_master AS m WHERE m.type = 'index' AND m.tbl_name = ? "
        "AND m.sql IS NOT NULL "
        "AND EXISTS (SELECT 1 FROM pragma_index_info(m.name) AS i WHERE i.name IS NULL)",
        (table,),
    ).all()
    return {name: sql for name, sql in rows}


def create_sql(index: sa.Index) -> str:
    """The CREATE INDEX SQLite stores for ``index``."""
    return str(CreateIndex(index).compile(dialect=SQLITE))


def parse_index(table: sa.Table, name: str, sql: str) -> sa.Index:
    """The index a stored ``CREATE INDEX`` makes, with its expressions as text."""
    head = _CREATE_INDEX.match(sql)
    if head is None:
        raise ValueError(f"not a CREATE INDEX: {sql}")
    depth, start = 0, head.end() - 1
    for end in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            break
    rest = sql[end + 1 :].strip()
    where = re.sub(r"^WHERE\s+", "", rest, flags=re.IGNORECASE) if rest else None
    kwargs: dict[str, Any] = {"unique": bool(head["unique"]), "_table": table}
    if where:
        kwargs["sqlite_where"] = sa.text(where)
    return sa.Index(name, sa.text(sql[start + 1 : end]), **kwargs)


def _detached(table: sa.Table) -> sa.Table:
    """A copy of a reflected table's columns to hang an old index on, leaving Alembic's table as it was."""
    return sa.Table(table.name, sa.MetaData(), *(sa.Column(c.name, c.type) for c in table.columns))


def setup(plugin: Plugin) -> None:
    """Alembic's plugin protocol: ``dbtools.autogenerate.render`` registers this module as a plugin."""
    plugin.add_autogenerate_comparator(
        compare_expression_indexes, "table", "indexes", priority=DispatchPriority.LAST
    )


# --- rewriting ---------------------------------------------------------------


def is_expression_op(op: ops.MigrateOperation) -> bool:
    """A created or dropped expression index."""
    if isinstance(op, ops.CreateIndexOp):
        return is_expression_index(op.to_index())
    if isinstance(op, ops.DropIndexOp):
        created = getattr(op, "_reverse", None)
        return isinstance(created, ops.CreateIndexOp) and is_expression_index(created.to_index())
    return False


def rewrite(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """Expression indexes dropped before their table's batch and created after it, in batches of their own."""
    for script in directives:
        for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
            container.ops = [part for op in container.ops for part in _split(op)]


def _split(op: ops.MigrateOperation) -> list[ops.MigrateOperation]:
    if not isinstance(op, ops.ModifyTableOps) or not any(is_expression_op(inner) for inner in op.ops):
        return [op]
    drops = [inner for inner in op.ops if isinstance(inner, ops.DropIndexOp) and is_expression_op(inner)]
    creates = [inner for inner in op.ops if isinstance(inner, ops.CreateIndexOp) and is_expression_op(inner)]
    rest = [inner for inner in op.ops if inner not in drops and inner not in creates]
    parts = (drops, rest, creates)
    return [ops.ModifyTableOps(op.table_name, part, schema=op.schema) for part in parts if part]

"""What Alembic does not compare about indexes: partial-index predicates, and expression indexes on SQLite.

Alembic compares an index's columns and uniqueness, nothing else:

- a partial index whose predicate changed (``postgresql_where=`` /
  ``sqlite_where=``) looks unchanged, on both backends. Here the predicates
  are compared, normalised (PostgreSQL prints ``((title)::text <> ''::text)``
  for ``title <> ''``): the compared database's own, and on SQLite
  PostgreSQL's too (``pgfacts``). A change is written as the index dropped
  and created again, which ``nonblocking`` makes ``CONCURRENTLY`` on
  PostgreSQL.
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
from sqlalchemy.engine.interfaces import ReflectedIndex
from sqlalchemy.schema import CreateIndex

from dbtools.autogenerate.pgsql import DIALECT
from dbtools.autogenerate.portable import load_facts as _facts

SQLITE: Dialect = sqlite.dialect()
_LITERAL = re.compile(r"('(?:[^']|'')*')")
# PostgreSQL adds casts to what it prints: drop them (types of more than one word first).
_CAST = re.compile(
    r"::(?:character varying|double precision|timestamp with(?:out)? time zone|[a-z_][a-z0-9_]*)(?:\[\])?"
)
_ANY_ARRAY = re.compile(r"=\s*any\s*\(\s*\(?\s*array\s*\[(.*?)\]\s*\)?\s*\)")
_CREATE_INDEX = re.compile(
    r"^\s*CREATE\s+(?P<unique>UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON\s+\S+?\s*\(",
    re.IGNORECASE,
)

# Both warn about what compare_expression_indexes compares itself on SQLite.
warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")


# --- normalising SQL text ---------------------------------------------------


def normalised(sql: str | None, table: str = "") -> str | None:
    """SQL as a comparison key: no casts, parentheses, quotes on names, case or spacing outside literals.

    Approximate on purpose: ``(a OR b) AND c`` and ``a OR (b AND c)`` compare
    equal. What changes in practice (a literal, a column, an operator) does not.
    """
    if sql is None:
        return None
    parts = _LITERAL.split(sql)
    for i in range(0, len(parts), 2):  # outside string literals
        code = _CAST.sub("", parts[i].lower())
        if table:
            code = re.sub(rf'(?<![\w"])"?{re.escape(table.lower())}"?\.', "", code)
        parts[i] = code.replace("!=", "<>")
    text = "".join(parts)
    text = _ANY_ARRAY.sub(r" in (\1)", text)  # PostgreSQL's = ANY (ARRAY[...]) for IN (...)
    parts = _LITERAL.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r'[\s()"`\[\]]', "", parts[i])
    return "".join(parts) or None


def predicate(index: sa.Index, dialect: Dialect) -> str | None:
    """The model's ``<dialect>_where`` of ``index`` as SQL, or None."""
    where = index.dialect_options[dialect.name].get("where")
    if where is None or isinstance(where, str):
        return where
    return str(where.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def differs(model: str | None, database: str | None, table: str) -> bool:
    return normalised(model, table) != normalised(database, table)


def _reflected_predicate(found: ReflectedIndex, dialect: str) -> str | None:
    where = found.get("dialect_options", {}).get(f"{dialect}_where")
    return None if where is None else str(getattr(where, "text", where))


# --- comparators -----------------------------------------------------------


def compare_predicates(
    autogen_context: AutogenContext,
    modify_table_ops: ops.ModifyTableOps,
    schema: str | None,
    table_name: str,
    conn_table: sa.Table | None,
    metadata_table: sa.Table | None,
) -> Any:
    """An index of the same name and columns whose predicate changed: dropped and created again."""
    dialect = autogen_context.dialect
    if conn_table is None or metadata_table is None or dialect is None or autogen_context.inspector is None:
        return PriorityDispatchResult.CONTINUE
    on_sqlite = dialect.name == "sqlite"
    facts = _facts(autogen_context) if on_sqlite else None
    reflected = {i["name"]: i for i in autogen_context.inspector.get_indexes(table_name, schema=schema)}
    handled = _index_names(modify_table_ops)
    for index in sorted(metadata_table.indexes, key=lambda i: str(i.name)):
        name = str(index.name)
        found = reflected.get(name)
        if found is None or name in handled:
            continue  # new, or already changed by Alembic's own comparison
        own = _reflected_predicate(found, dialect.name)
        changed = differs(predicate(index, dialect), own, table_name)
        # Compared with SQLite: PostgreSQL's predicate, which SQLite cannot hold, from its facts.
        pg_where = own if not on_sqlite else facts.predicates.get(name) if facts is not None else None
        if on_sqlite and facts is not None:
            changed |= differs(predicate(index, DIALECT), pg_where, table_name)
        if changed:
            old = _old_index(conn_table, found, pg_where, sqlite_where=own if on_sqlite else None)
            modify_table_ops.ops += [ops.DropIndexOp.from_index(old), ops.CreateIndexOp.from_index(index)]
    return PriorityDispatchResult.CONTINUE


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
    facts = _facts(autogen_context)
    for name in sorted(stored.keys() | wanted.keys()):
        index = wanted.get(name)
        sql = stored.get(name)
        if index is not None and sql is not None and normalised(sql) == normalised(create_sql(index)):
            continue
        if sql is not None:
            assert conn_table is not None
            pg_where = facts.predicates.get(name) if facts is not None else None
            old = parse_index(_detached(conn_table), name, sql, pg_where)
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


def parse_index(table: sa.Table, name: str, sql: str, pg_where: str | None) -> sa.Index:
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
    if pg_where:
        kwargs["postgresql_where"] = sa.text(pg_where)
    return sa.Index(name, sa.text(sql[start + 1 : end]), **kwargs)


def _old_index(
    conn_table: sa.Table, found: ReflectedIndex, pg_where: str | None, sqlite_where: str | None
) -> sa.Index:
    """The index as the database has it: its columns or expressions, and its predicates."""
    table = _detached(conn_table)
    expressions = found.get("expressions") or found["column_names"]
    elements: list[Any] = [
        table.c[column] if column is not None and column in table.c else sa.text(str(expression))
        for column, expression in zip(found["column_names"], expressions, strict=False)
    ]
    kwargs: dict[str, Any] = {"unique": bool(found["unique"]), "_table": table}
    if pg_where:
        kwargs["postgresql_where"] = sa.text(pg_where)
    if sqlite_where:
        kwargs["sqlite_where"] = sa.text(sqlite_where)
    return sa.Index(found["name"], *elements, **kwargs)


def _detached(table: sa.Table) -> sa.Table:
    """A copy of a reflected table's columns to hang an old index on, leaving Alembic's table as it was."""
    return sa.Table(table.name, sa.MetaData(), *(sa.Column(c.name, c.type) for c in table.columns))


def _index_names(modify_table_ops: ops.ModifyTableOps) -> set[str]:
    return {
        str(op.index_name)
        for op in modify_table_ops.ops
        if isinstance(op, ops.CreateIndexOp | ops.DropIndexOp)
    }


def setup(plugin: Plugin) -> None:
    """Alembic's plugin protocol: ``dbtools.autogenerate.render`` registers this module as a plugin."""
    # LAST: after Alembic's own index comparison, whose changes stand.
    plugin.add_autogenerate_comparator(compare_predicates, "table", "indexes", priority=DispatchPriority.LAST)
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

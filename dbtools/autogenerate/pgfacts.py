"""What PostgreSQL has that SQLite cannot store: enum types, key widths, comments, index predicates.

Autogenerate compares the models with a database. Compared with SQLite it is
blind to PostgreSQL facts: an ``Enum`` is a plain VARCHAR there (its type
name and values are nowhere), a rowid primary key must be declared
``INTEGER`` whatever its width on PostgreSQL, SQLite keeps no comments, and
an index's ``postgresql_where`` is nowhere in SQLite. Those facts come from
the live server when autogenerate runs against PostgreSQL, and otherwise
from ``schema/postgresql.sql``, the ``pg_dump`` of the migrations at head
that ``make schema`` keeps current (and ``make test`` checks). A snapshot
written at another revision than the database's describes another schema,
so it is not used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

SNAPSHOT = Path("schema") / "postgresql.sql"
_HEAD = re.compile(r"^-- PostgreSQL schema at migration head (?P<heads>[^.]+)\.$", re.MULTILINE)
_ENUM = re.compile(r"^CREATE TYPE (?:public\.)?(?P<name>\w+) AS ENUM \((?P<values>.*?)\);$", re.M | re.S)
_TABLE = re.compile(r"^CREATE TABLE (?:public\.)?(?P<name>\w+) \(\n(?P<body>.*?)\n\);$", re.M | re.S)
_COLUMN = re.compile(r"^ {4}(?P<name>\w+) (?P<type>.+?)(?: DEFAULT (?P<default>.+?))?(?: NOT NULL)?,?$")
_SEQUENCE = re.compile(r"^CREATE SEQUENCE (?:public\.)?(?P<name>\w+)\n {4}AS (?P<type>\w+)$", re.M)
_OWNED = re.compile(
    r"^ALTER SEQUENCE (?:public\.)?(?P<name>\w+) OWNED BY (?:public\.)?(?P<table>\w+)\.(?P<column>\w+);$",
    re.M,
)
_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_QUOTED = r"'(?P<text>(?:[^']|'')*)'"
_TABLE_COMMENT = re.compile(rf"^COMMENT ON TABLE (?:public\.)?(?P<table>\w+) IS {_QUOTED};$", re.M | re.S)
_COLUMN_COMMENT = re.compile(
    rf"^COMMENT ON COLUMN (?:public\.)?(?P<table>\w+)\.(?P<column>\w+) IS {_QUOTED};$", re.M | re.S
)
_INDEX_PREDICATE = re.compile(
    r"^CREATE (?:UNIQUE )?INDEX (?P<name>\w+) ON (?:public\.)?\w+ USING \w+ \(.*\) WHERE (?P<where>.*);$",
    re.M,
)


@dataclass(frozen=True)
class PgFacts:
    """Enum types by name (values in order) and each column's type, as PostgreSQL names them.

    Also what SQLite cannot keep: comments (of a table, or of a table's
    column) and each partial index's predicate, by index name, as PostgreSQL
    prints it (``pg_get_expr``).
    """

    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    columns: dict[tuple[str, str], str] = field(default_factory=dict)
    defaults: dict[tuple[str, str], str] = field(default_factory=dict)
    sequences: dict[tuple[str, str], str] = field(default_factory=dict)
    table_comments: dict[str, str] = field(default_factory=dict)
    column_comments: dict[tuple[str, str], str] = field(default_factory=dict)
    predicates: dict[str, str] = field(default_factory=dict)

    def tables(self) -> set[str]:
        return {table for table, _ in self.columns}

    def enum_of(self, table: str, column: str) -> str | None:
        type_name = self.columns.get((table, column))
        return type_name if type_name in self.enums else None

    def users_of(self, enum: str) -> list[tuple[str, str]]:
        """The (table, column) pairs whose type is ``enum``, in a stable order."""
        return sorted(key for key, type_name in self.columns.items() if type_name == enum)


def from_snapshot(text: str, heads: tuple[str, ...]) -> PgFacts | None:
    """The facts in a ``pg_dump`` snapshot, or None unless it was taken at ``heads``."""
    found = _HEAD.search(text)
    if found is None or tuple(sorted(found["heads"].split(", "))) != tuple(sorted(heads)):
        return None
    enums = {m["name"]: tuple(literals(m["values"])) for m in _ENUM.finditer(text)}
    columns: dict[tuple[str, str], str] = {}
    defaults: dict[tuple[str, str], str] = {}
    for table in _TABLE.finditer(text):
        for line in table["body"].splitlines():
            column = _COLUMN.match(line)
            if column is None or column["name"] == "CONSTRAINT":
                continue
            key = (table["name"], column["name"])
            columns[key] = column["type"].removeprefix("public.")
            if column["default"]:
                defaults[key] = column["default"]
    types = {m["name"]: m["type"] for m in _SEQUENCE.finditer(text)}
    sequences = {(m["table"], m["column"]): types.get(m["name"], "bigint") for m in _OWNED.finditer(text)}
    table_comments = {m["table"]: _unquoted(m["text"]) for m in _TABLE_COMMENT.finditer(text)}
    column_comments = {
        (m["table"], m["column"]): _unquoted(m["text"]) for m in _COLUMN_COMMENT.finditer(text)
    }
    predicates = {m["name"]: m["where"] for m in _INDEX_PREDICATE.finditer(text)}
    return PgFacts(enums, columns, defaults, sequences, table_comments, column_comments, predicates)


def from_connection(connection: Connection) -> PgFacts:
    """The facts of a live PostgreSQL database's default schema: public, or a tenant's (MIGRATION_SCHEMA)."""
    enums = {e["name"]: tuple(e["labels"]) for e in inspect(connection).get_enums()}  # type: ignore[attr-defined]
    rows = connection.exec_driver_sql(
        "SELECT c.relname, a.attname, format_type(a.atttypid, NULL), pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
    ).all()
    columns = {(table, column): type_name.removeprefix("public.") for table, column, type_name, _ in rows}
    defaults = {(table, column): default for table, column, _, default in rows if default}
    # Serial columns own their sequence ('a'), identity columns theirs ('i').
    owned = connection.exec_driver_sql(
        "SELECT t.relname, a.attname, format_type(s.seqtypid, NULL) FROM pg_sequence s "
        "JOIN pg_depend d ON d.objid = s.seqrelid AND d.classid = 'pg_class'::regclass "
        "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "JOIN pg_class t ON t.oid = d.refobjid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = current_schema() "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
    ).all()
    sequences = {(table, column): type_name for table, column, type_name in owned}
    # A table's comment has objsubid 0, a column's its attnum.
    comments = connection.exec_driver_sql(
        "SELECT c.relname, a.attname, d.description FROM pg_description d "
        "JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass AND c.relkind = 'r' "
        "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0"
    ).all()
    table_comments = {table: text for table, column, text in comments if column is None}
    column_comments = {(table, column): text for table, column, text in comments if column is not None}
    partial = connection.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() "
        "WHERE i.indpred IS NOT NULL"
    ).all()
    predicates = {name: where for name, where in partial}
    return PgFacts(enums, columns, defaults, sequences, table_comments, column_comments, predicates)


def load(connection: Connection, project_root: Path, heads: tuple[str, ...]) -> PgFacts | None:
    """The PostgreSQL facts for autogenerate: live on PostgreSQL, else the snapshot if current."""
    if connection.dialect.name == "postgresql":
        return from_connection(connection)
    path = project_root / SNAPSHOT
    return from_snapshot(path.read_text(), heads) if path.exists() else None


def literal_of(default: str | None) -> str | None:
    """The string in a default such as ``'member'::user_role``; None for anything else."""
    found = _LITERAL.fullmatch(default.split("::", 1)[0]) if default else None
    return found[1].replace("''", "'") if found else None


def _unquoted(text: str) -> str:
    return text.replace("''", "'")


def literals(text: str) -> list[str]:
    """Every string literal in ``text``, unquoted."""
    return [value.replace("''", "'") for value in _LITERAL.findall(text)]

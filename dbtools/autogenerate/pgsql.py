"""PostgreSQL as a generated migration writes it, whichever database autogenerate compared against.

One migration file runs on both backends, so what only PostgreSQL runs is
written under the ``ON_POSTGRESQL`` guard, often as ``op.execute()`` of SQL
Alembic has no operation for (``NOT VALID``, ``RENAME CONSTRAINT``, ``CREATE
TYPE``). That SQL is quoted, and types are named, by PostgreSQL's rules
even when autogenerate compared against SQLite: hence ``DIALECT`` rather
than the compared database's dialect.

The lines returned carry no indentation of their own: Alembic writes them
through Mako's ``PythonPrinter``, which indents by itself (a line ending in
``:`` opens a block, an empty line closes it, ``else:`` dedents).
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

ON_POSTGRESQL = 'if op.get_context().dialect.name == "postgresql":'
# CREATE INDEX CONCURRENTLY and friends refuse to run inside a transaction block.
AUTOCOMMIT = "with op.get_context().autocommit_block():"
DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
# SQL longer than this is split: with the indentation of the blocks above and the
# quotes, each piece still fits `make lint`'s line length.
WIDTH = 72
# PostgreSQL's NAMEDATALEN - 1: a longer name is truncated, silently, to this many bytes.
MAX_NAME_BYTES = 63


def ident(name: str) -> str:
    """A name as PostgreSQL needs it quoted (only when it must be: reserved words, capitals)."""
    return str(DIALECT.identifier_preparer.quote(name))


def literal(value: str) -> str:
    """A string as a PostgreSQL literal."""
    return "'" + value.replace("'", "''") + "'"


def execute(sql: str, width: int = WIDTH) -> str:
    """``op.execute("...")``, long SQL split at spaces over lines that fit ``make lint``'s line length.

    The pieces are adjacent string literals, so the SQL is the same; ruff's
    post-write hook lays out the call.
    """
    if len(sql) <= width:
        return f"op.execute({sql!r})"
    pieces, line = [], ""
    for word in sql.split(" "):
        if line and len(line) + len(word) >= width:
            pieces.append(line)
            line = ""
        line += word + " "
    pieces.append(line[:-1])
    return "op.execute(\n" + "".join(f"        {piece!r}\n" for piece in pieces) + "    )"


# --- type names, as PostgreSQL spells them ----------------------------------

_ALIASES = {
    "int": "integer",
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
    "timetz": "time with time zone",
}


def base_type(name: str) -> str:
    """A PostgreSQL type name without modifiers, spelled one way: ``VARCHAR(64)`` -> ``varchar``."""
    bare = " ".join(name.lower().split("(")[0].split())
    for suffix in (" with time zone", " without time zone"):  # timestamp(3) with time zone
        if suffix in name.lower() and not bare.endswith(suffix):
            bare += suffix
    return _ALIASES.get(bare, bare)


# --- type changes: which need a USING, and the cast a known one takes ---------

# A marker comment autogenerate writes above a type change it cannot convert;
# `make lint` refuses the file while the marker is there (dbtools.lint.review).
USING_MARKER = "# USING needed:"
# The same for an expand revision's NOT NULL with no default to fill the old version's NULL writes from.
FILL_MARKER = "# FILL needed:"

_STRINGS = {"text", "character varying", "varchar", "character", "char", "bpchar"}
_NUMBERS = {"smallint", "integer", "bigint", "numeric", "decimal", "real", "float", "double precision"}

# Casts PostgreSQL applies by itself in ALTER COLUMN TYPE (pg_cast, context implicit
# or assignment), beyond those to a string type and those between number types.
_ASSIGNED = {
    ("date", "timestamp without time zone"),
    ("date", "timestamp with time zone"),
    ("timestamp without time zone", "timestamp with time zone"),
    ("timestamp with time zone", "timestamp without time zone"),
    ("timestamp without time zone", "date"),
    ("timestamp with time zone", "date"),
    ("timestamp without time zone", "time without time zone"),
    ("timestamp with time zone", "time without time zone"),
    ("time without time zone", "time with time zone"),
    ("time with time zone", "time without time zone"),
    ("json", "jsonb"),
    ("jsonb", "json"),
}
# What a string converts to with a plain cast: PostgreSQL parses the text as the type.
_PARSED = _NUMBERS | {
    "json",
    "jsonb",
    "boolean",
    "uuid",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "time without time zone",
    "interval",
}


class UnknownCast(Exception):
    """A type change PostgreSQL cannot make by itself, and for which no cast is known here."""


def using(column: str, old: str, new: str, enums: frozenset[str] = frozenset()) -> str | None:
    """The ``USING`` expression a change of ``column`` from type ``old`` to ``new`` needs, or None.

    None when PostgreSQL casts by itself: to a string type, between number
    types, and the date, time and JSON pairs it assigns. A string becomes
    any type it can be parsed as with a plain cast (``col::json``,
    ``col::integer``); a string or an enum becomes an enum through text
    (``col::text::user_role``). Anything else raises ``UnknownCast``.
    ``enums`` are the names of enum types (a type name alone does not say).
    """
    before, after = base_type(old), base_type(new)
    if before == after or after in _STRINGS:
        return None
    if (before in _NUMBERS and after in _NUMBERS) or (before, after) in _ASSIGNED:
        return None
    from_text = before in _STRINGS or before in enums
    if from_text and after in enums:
        return f"{ident(column)}::text::{ident(new)}"
    if before in _STRINGS and after in _PARSED:
        return f"{ident(column)}::{new.lower()}"
    raise UnknownCast(f"PostgreSQL cannot cast {old} to {new} by itself")

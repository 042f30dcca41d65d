"""Autogenerate that writes one migration for both backends, whichever it compared against.

Users autogenerate against SQLite, the default, and deploy the same file on
PostgreSQL. Alembic renders what the compared database reports, so this
module adds what SQLite cannot say (``dbtools.autogenerate.pgfacts``) and rewrites what it
says in its own dialect:

- PostgreSQL enum types are created before their first column, dropped after
  their last, given new values with ``ALTER TYPE ... ADD VALUE``, and
  replaced when a value goes; columns never create or drop them implicitly
  (``create_type=False``).
- A CHECK-backed enum (``native_enum=False, create_constraint=True``) has
  its values compared with its CHECK, which is added once, as an operation
  of its own, never by the column's type as well.
- A primary key widened to BIGINT takes its sequence along, which Alembic
  leaves at INTEGER (2,147,483,647 ids); a key column that owns no sequence
  is widened alone.
- A new table's BIGINT key is SQLite's INTEGER there: its rowid, which
  numbers rows.
- Boolean server defaults render as ``sa.true()`` / ``sa.false()``, not as
  SQLite's ``1`` / ``0``, which PostgreSQL refuses for a boolean.
- Comments are ``COMMENT ON`` under the PostgreSQL guard: SQLite keeps none.
- What a downgrade creates back (a dropped table or column, a changed type)
  renders as the generic type, as PostgreSQL had it: not as SQLite's
  ``DATETIME`` or ``CHAR(32)``, which PostgreSQL refuses or narrows.
- A type change PostgreSQL cannot cast by itself gets its ``USING``, or a
  marker ``make lint`` refuses until the author writes it.
- Tables are dropped after the changes to the tables that stay (the foreign
  keys that point at them), and before the dropped tables they reference.
- ``Computed`` and ``Identity`` columns are compared without crashing
  Alembic's comparator, and SQLite's missing identity is no difference.

PostgreSQL-only steps render inside ``if op.get_context().dialect.name ==
"postgresql":``, so SQLite's batch operations stay as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import util
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import Column, DefaultClause
from sqlalchemy.sql.elements import conv

from dbtools import run, settings
from dbtools.autogenerate import pgfacts, sqlite_only
from dbtools.autogenerate.pgsql import (
    AUTOCOMMIT,
    DIALECT,
    MAX_NAME_BYTES,
    ON_POSTGRESQL,
    USING_MARKER,
    UnknownCast,
    base_type,
    execute,
    ident,
    literal,
    using,
)

_BOOLEAN_TEXT = {"1": True, "true": True, "'1'": True, "0": False, "false": False, "'0'": False}
# PostgreSQL's type, where it says more than the generic form of SQLite's reflection
# (an INTEGER key that is bigint, a DATETIME that has a time zone, a CHAR(32) that is a uuid).
_FROM_POSTGRESQL: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "smallint": sa.SmallInteger,
    "integer": sa.Integer,
    "bigint": sa.BigInteger,
    "boolean": sa.Boolean,
    "text": sa.Text,
    "date": sa.Date,
    "double precision": sa.Double,
    "timestamp with time zone": lambda: sa.DateTime(timezone=True),
    "timestamp without time zone": sa.DateTime,
    "uuid": sa.Uuid,
    "json": sa.JSON,
    "jsonb": lambda: sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
}
# op.kw key of an AlterColumnOp whose type change has no known cast: (old, new) type names.
UNKNOWN_CAST = "dbtools_unknown_cast"


# --- PostgreSQL-only operations, rendered as plain op.execute() ------------


class PostgresqlOnlyOp(ops.MigrateOperation):
    """A step SQLite has no equivalent for, rendered as commented ``op.execute()`` calls."""

    def comment(self) -> str:
        raise NotImplementedError

    def autocommit(self) -> bool:
        """Whether the statements run in an ``autocommit_block()``, committed as they run."""
        return False

    def statements(self) -> list[str]:
        raise NotImplementedError

    def to_diff_tuple(self) -> tuple[Any, ...]:
        """How ``make check`` reports it."""
        raise NotImplementedError


class EnumTypeOp(PostgresqlOnlyOp):
    """CREATE TYPE ... AS ENUM, or with ``create=False`` DROP TYPE."""

    def __init__(self, name: str, values: tuple[str, ...], create: bool) -> None:
        self.name, self.values, self.create = name, values, create

    def reverse(self) -> EnumTypeOp:
        return EnumTypeOp(self.name, self.values, not self.create)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_enum" if self.create else "remove_enum", self.name, self.values)

    def comment(self) -> str:
        return f"# PostgreSQL's enum type {self.name} (SQLite stores the values as strings)"

    def statements(self) -> list[str]:
        if self.create:
            return [f"CREATE TYPE {ident(self.name)} AS ENUM ({', '.join(map(literal, self.values))})"]
        return [f"DROP TYPE {ident(self.name)}"]


class EnumValuesOp(PostgresqlOnlyOp):
    """Give an enum type new values.

    Values only added (the old ones kept, in their order) take ``ALTER TYPE
    ... ADD VALUE``, which changes the catalog only. A value added in a
    transaction cannot be used before that transaction commits (55P04), and
    a run is one transaction: a later step of the same run (a default set to
    the value, the next migration's data step) would fail. So the values are
    added in an ``autocommit_block()``, first in the migration, with ``IF NOT
    EXISTS``: a run that fails later resumes past them.

    Any other change (a value removed, values reordered) replaces the type: a
    new type takes the old one's place in every column using it, which
    rewrites those tables under ACCESS EXCLUSIVE. A check runs first and
    stops the run with a message of its own (``RAISE EXCEPTION``, one
    ``FAILED:`` line by ``dbtools.errors``) if a row still holds a removed
    value (``make lint`` names those rows too), or if the name the old type
    moves to for the swap is taken.
    """

    def __init__(
        self,
        name: str,
        old: tuple[str, ...],
        new: tuple[str, ...],
        columns: tuple[tuple[str, str, str | None], ...],
    ) -> None:
        self.name, self.old, self.new, self.columns = name, old, new, columns

    def reverse(self) -> EnumValuesOp:
        return EnumValuesOp(self.name, self.new, self.old, self.columns)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("modify_enum_values", self.name, self.old, self.new)

    @property
    def only_adds(self) -> bool:
        """The old values all kept, in their order: a new value is only added, wherever it goes."""
        kept = [value for value in self.new if value in self.old]
        return kept == list(self.old) and len(self.new) > len(self.old)

    def autocommit(self) -> bool:
        return self.only_adds

    def comment(self) -> str:
        added = ", ".join(literal(value) for value in self.new if value not in self.old)
        removed = ", ".join(literal(value) for value in self.old if value not in self.new)
        if self.only_adds:
            return f"# PostgreSQL: {self.name} gains {added} (catalog only), committed for the steps after it"
        if removed:
            return f"# PostgreSQL: {self.name} loses {removed}: a new type replaces it (no row may hold it)"
        return f"# PostgreSQL: {self.name} becomes ({', '.join(self.new)}), a new type replacing the old"

    def statements(self) -> list[str]:
        if self.only_adds:
            return self._add_values()
        name, old_name = ident(self.name), ident(self.swapped_name)
        out = [
            *self._checks(),
            f"ALTER TYPE {name} RENAME TO {old_name}",
            EnumTypeOp(self.name, self.new, create=True).statements()[0],
        ]
        for table, column, default in self.columns:
            alter = f"ALTER TABLE {ident(table)} ALTER COLUMN {ident(column)}"
            if default is not None:
                out.append(f"{alter} DROP DEFAULT")
            out.append(f"{alter} TYPE {name} USING {ident(column)}::text::{name}")
            if default is not None:
                out.append(f"{alter} SET DEFAULT {literal(default)}")
        return [*out, f"DROP TYPE {old_name}"]

    @property
    def swapped_name(self) -> str:
        """The old type's name while the new one takes its place: ``<name>_old``, within 63 bytes."""
        base = self.name.encode()[: MAX_NAME_BYTES - len(b"_old")].decode(errors="ignore")
        return f"{base}_old"

    def _checks(self) -> list[str]:
        """DO blocks that stop the swap, before it changes anything, where it would fail midway.

        Without them it fails on a bare cast error (a row holding a removed
        value) or a duplicate type (``<name>_old`` taken), both tracebacks.
        No ``%`` in them: the driver would read one as a placeholder.
        """
        name, temporary = self.name, self.swapped_name
        taken = (
            f"IF EXISTS (SELECT FROM pg_type WHERE typname = {literal(temporary)} AND typnamespace = "
            f"(SELECT typnamespace FROM pg_type WHERE oid = {literal(ident(name))}::regtype)) THEN "
            "RAISE EXCEPTION USING MESSAGE = "
            + literal(f"the type {temporary} exists already, and replacing enum type {name} needs that name")
            + ", HINT = "
            + literal(f"Drop or rename {temporary} (a leftover of an earlier replacement?), then run again")
            + "; END IF;"
        )
        out = [_do(taken)]
        if all(value in self.new for value in self.old):
            return out  # reordered only: every row keeps its value
        kept = ", ".join(literal(value) for value in self.new)
        for table, column, _default in self.columns:
            value = f"{ident(column)}::text"
            held = (
                f"SELECT count(*), string_agg(DISTINCT quote_literal({value}), ', ' ORDER BY "
                f"quote_literal({value})) INTO n, held FROM {ident(table)} WHERE {value} NOT IN ({kept}); "
                "IF n > 0 THEN RAISE EXCEPTION USING MESSAGE = n || "
                + literal(f" row(s) of {table}.{column} hold ")
                + " || held || "
                + literal(f", which enum type {name} loses")
                + ", HINT = 'Update or delete those rows, then run again'; END IF;"
            )
            out.append(_do(held, "DECLARE n bigint; held text;"))
        return out

    def _add_values(self) -> list[str]:
        """Each new value after the one before it (a new first value: before the second), in order."""
        later, first = [], []
        for i, value in enumerate(self.new):
            if value in self.old:
                continue
            add = f"ALTER TYPE {ident(self.name)} ADD VALUE IF NOT EXISTS {literal(value)}"
            if i > 0:
                later.append(f"{add} AFTER {literal(self.new[i - 1])}")
            else:
                first.append(f"{add} BEFORE {literal(self.new[1])}")
        return [*later, *first]


def _do(body: str, declare: str = "") -> str:
    """An anonymous PL/pgSQL block, quoted with a dollar tag its body does not contain."""
    tag = "$check$"
    while tag in body:
        tag = f"${tag[1:-1]}_$"
    return " ".join(part for part in ("DO", tag, declare, "BEGIN", body, "END", tag) if part)


class SequenceTypeOp(PostgresqlOnlyOp):
    """Keep a key's sequence as wide as its column (and, when SQLite compared, widen the column).

    A key column that owns no sequence (one of a composite key, a foreign key
    that is part of the key) is widened alone: ``pg_get_serial_sequence``
    finds nothing for it, and ``EXECUTE`` of NULL fails.
    """

    def __init__(
        self, table: str, column: str, new: str, old: str, with_column: bool, with_sequence: bool = True
    ) -> None:
        self.table, self.column, self.new, self.old = table, column, new, old
        self.with_column, self.with_sequence = with_column, with_sequence

    def reverse(self) -> SequenceTypeOp:
        return SequenceTypeOp(
            self.table, self.column, self.old, self.new, self.with_column, self.with_sequence
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        kind = "modify_key_type" if self.with_column else "modify_sequence_type"
        return (kind, self.table, self.column, self.old, self.new)

    def comment(self) -> str:
        key = f"{self.table}.{self.column}"
        if self.with_column and not self.with_sequence:
            return f"# PostgreSQL: {key} becomes {self.new} (SQLite's INTEGER key is 64-bit)"
        if self.with_column:
            return f"# PostgreSQL: {key} and its sequence become {self.new} (SQLite's INTEGER key is 64-bit)"
        return f"# PostgreSQL: the sequence of {key} becomes {self.new}, as wide as the column"

    def statements(self) -> list[str]:
        table, column = ident(self.table), ident(self.column)
        out = [f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {self.new}"] if self.with_column else []
        if not self.with_sequence:
            return out
        # pg_get_serial_sequence finds it for serial and identity columns, whatever its name.
        sequence = f"pg_get_serial_sequence({literal(table)}, {literal(self.column)})"
        return [*out, f"DO $$ BEGIN EXECUTE 'ALTER SEQUENCE ' || {sequence} || ' AS {self.new}'; END $$"]


class CommentOp(PostgresqlOnlyOp):
    """``COMMENT ON TABLE`` / ``COMMENT ON COLUMN``: PostgreSQL keeps comments, SQLite has nowhere to.

    Catalog-only on PostgreSQL. Alembic would write a comment change as
    ``alter_column(comment=...)``, which rebuilds a SQLite table to change
    nothing there, or ``create_table_comment()``, which SQLite cannot run.
    """

    def __init__(self, table: str, column: str | None, new: str | None, old: str | None) -> None:
        self.table, self.column, self.new, self.old = table, column, new, old

    def reverse(self) -> CommentOp:
        return CommentOp(self.table, self.column, self.old, self.new)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        if self.column is None:
            return ("modify_table_comment", self.table, self.old, self.new)
        return ("modify_comment", self.table, self.column, self.old, self.new)

    def comment(self) -> str:
        what = self.table if self.column is None else f"{self.table}.{self.column}"
        return f"# PostgreSQL: the comment on {what} (SQLite keeps no comments)"

    def statements(self) -> list[str]:
        text = "NULL" if self.new is None else literal(self.new)
        if self.column is None:
            return [f"COMMENT ON TABLE {ident(self.table)} IS {text}"]
        return [f"COMMENT ON COLUMN {ident(self.table)}.{ident(self.column)} IS {text}"]


def render_postgresql_only(autogen_context: AutogenContext, op: PostgresqlOnlyOp) -> list[str]:
    """The renderer of every ``PostgresqlOnlyOp`` (registered by ``dbtools.autogenerate.render``)."""
    body = [execute(sql) for sql in op.statements()]
    if op.autocommit():
        body = [AUTOCOMMIT, *body, ""]
    return [op.comment(), ON_POSTGRESQL, *body, ""]


# --- Comparators: what PostgreSQL needs that the compared database did not show ------


def load_facts(autogen_context: AutogenContext) -> pgfacts.PgFacts | None:
    """PostgreSQL's facts for this run, loaded by the first comparator that asks; None when unseen."""
    context = autogen_context.migration_context
    options = run.in_context(context)
    if settings.sqlite_only():
        return None  # nothing of PostgreSQL's to compare (dbtools.autogenerate.sqlite_only)
    if not options.facts_loaded:
        connection = context.connection
        if options.project_root is not None and connection is not None:
            heads = tuple(context.get_current_heads())
            options.pg_facts = pgfacts.load(connection, options.project_root, heads)
        options.facts_loaded = True
    return _loaded(context)


def _loaded(context: MigrationContext) -> pgfacts.PgFacts | None:
    facts = run.in_context(context).pg_facts
    return facts if isinstance(facts, pgfacts.PgFacts) else None


def model_enums(metadata: sa.MetaData) -> dict[str, tuple[str, ...]]:
    """Named native enum types the models use, with their values."""
    found: dict[str, tuple[str, ...]] = {}
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, sa.Enum) and column.type.native_enum and column.type.name:
                found[column.type.name] = tuple(column.type.enums)
    return found


def _metadata(autogen_context: AutogenContext) -> sa.MetaData | None:
    metadata = autogen_context.metadata
    return metadata if isinstance(metadata, sa.MetaData) else None


def compare_enums_first(autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Any) -> Any:
    """New enum types and changed values, before any table uses them."""
    facts, metadata = load_facts(autogen_context), _metadata(autogen_context)
    if facts is None or metadata is None:
        return PriorityDispatchResult.CONTINUE
    for name, values in model_enums(metadata).items():
        old = facts.enums.get(name)
        if old is None:
            upgrade_ops.ops.append(EnumTypeOp(name, values, create=True))
        elif old != values:
            users = tuple(
                (table, column, pgfacts.literal_of(facts.defaults.get((table, column))))
                for table, column in facts.users_of(name)
            )
            upgrade_ops.ops.append(EnumValuesOp(name, old, values, users))
    return PriorityDispatchResult.CONTINUE


def compare_enums_last(autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Any) -> Any:
    """Enum types no model uses any more, after their last column is gone."""
    facts, metadata = load_facts(autogen_context), _metadata(autogen_context)
    if facts is None or metadata is None:
        return PriorityDispatchResult.CONTINUE
    in_use = model_enums(metadata)
    for name, values in sorted(facts.enums.items()):
        if name not in in_use:
            upgrade_ops.ops.append(EnumTypeOp(name, values, create=False))
    return PriorityDispatchResult.CONTINUE


def compare_key_widths(autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Any) -> Any:
    """An integer key's sequence (and, compared with SQLite, the column) as wide as the model's."""
    facts, metadata = load_facts(autogen_context), _metadata(autogen_context)
    if facts is None or metadata is None:
        return PriorityDispatchResult.CONTINUE
    on_sqlite = _on_sqlite(autogen_context)
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            wanted = column.type.compile(dialect=DIALECT).lower()
            key = (table.name, column.name)
            if key not in facts.columns:
                continue  # a new table: created at the model's width
            current = facts.columns[key]
            sequence = facts.sequences.get(key)
            if on_sqlite and current != wanted:
                # SQLite's rowid key is INTEGER at any width, so Alembic saw no change. Only a
                # key that owns a sequence (serial; an identity's follows its column) widens one.
                upgrade_ops.ops.append(
                    SequenceTypeOp(table.name, column.name, wanted, current, True, sequence is not None)
                )
            elif sequence is not None and sequence != wanted:
                upgrade_ops.ops.append(SequenceTypeOp(table.name, column.name, wanted, sequence, False))
    return PriorityDispatchResult.CONTINUE


def compare_comments(autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Any) -> Any:
    """Comments compared with PostgreSQL's (``pgfacts``) when SQLite, which keeps none, was compared.

    Alembic compares comments itself where the database keeps them; a new
    table or column takes its comment along as it is created.
    """
    facts, metadata = load_facts(autogen_context), _metadata(autogen_context)
    if facts is None or metadata is None or not _on_sqlite(autogen_context):
        return PriorityDispatchResult.CONTINUE
    existing = facts.tables()
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        old_table = facts.table_comments.get(table.name)
        if (table.comment or None) != old_table:
            upgrade_ops.ops.append(CommentOp(table.name, None, table.comment or None, old_table))
        for column in table.columns:
            key = (table.name, column.name)
            old = facts.column_comments.get(key)
            if key in facts.columns and (column.comment or None) != old:
                upgrade_ops.ops.append(CommentOp(table.name, column.name, column.comment or None, old))
    return PriorityDispatchResult.CONTINUE


def compare_check_enums(
    autogen_context: AutogenContext,
    modify_table_ops: ops.ModifyTableOps,
    schema: str | None,
    table_name: str,
    conn_table: sa.Table | None,
    metadata_table: sa.Table | None,
) -> Any:
    """A CHECK-backed enum's values (``native_enum=False, create_constraint=True``), compared with its CHECK.

    ``alembic.ext.checkconstraint_byname`` compares CHECK constraints by name
    only, and the column's VARCHAR length shows only a longer value: a new
    value as long as an old one went unseen, then refused at insert. A change
    is written as the CHECK dropped and added again, under its name from the
    naming convention (``NOT VALID`` + ``VALIDATE`` on PostgreSQL).
    """
    inspector = autogen_context.inspector
    if conn_table is None or metadata_table is None or inspector is None:
        return PriorityDispatchResult.CONTINUE
    reflected = {ck["name"]: ck for ck in inspector.get_check_constraints(table_name, schema=schema)}
    handled = {
        str(getattr(op, "constraint_name", ""))
        for op in modify_table_ops.ops
        if isinstance(op, ops.AddConstraintOp | ops.DropConstraintOp)
    }
    for column, check in check_enums(metadata_table):
        name, values = str(check.name), tuple(getattr(column.type, "enums", ()))
        found = reflected.get(name)
        if found is None or name in handled:
            continue  # added or dropped by name, by checkconstraint_byname
        old = tuple(pgfacts.literals(found["sqltext"]))
        if set(old) != set(values):
            detached = sa.Table(table_name, sa.MetaData(), sa.Column(column.name, sa.String()))
            # The values SQLAlchemy would check, in its own words, so the downgrade runs on both backends.
            sqltext = f"{column.name} IN ({', '.join(map(literal, old))})"
            old_check = sa.CheckConstraint(sqltext, name=conv(name), table=detached)
            modify_table_ops.ops += [
                ops.DropConstraintOp.from_constraint(old_check),
                ops.AddConstraintOp.from_constraint(check),
            ]
    return PriorityDispatchResult.CONTINUE


def check_enums(table: sa.Table) -> Iterator[tuple[Column[Any], sa.CheckConstraint]]:
    """Each column of ``table`` whose non-native ``Enum`` adds a named CHECK, with that CHECK."""
    for check in table.constraints:
        # Unnamed ones the naming convention refuses when the table is created.
        if isinstance(check, sa.CheckConstraint) and getattr(check, "_type_bound", False) and check.name:
            for column in check.columns:
                if isinstance(column.type, sa.Enum) and not column.type.native_enum:
                    yield column, check


def _on_sqlite(autogen_context: AutogenContext) -> bool:
    return autogen_context.dialect is not None and autogen_context.dialect.name == "sqlite"


def compare_generated(
    autogen_context: AutogenContext,
    alter_column_op: ops.AlterColumnOp,
    schema: str | None,
    table: str,
    column: str,
    conn_col: Column[Any],
    metadata_col: Column[Any],
) -> Any:
    """A ``Computed`` or ``Identity`` column's default, compared before Alembic's user-hook comparator.

    That comparator reads ``.arg`` of the reported default, which a computed
    or identity default does not have: it would crash (``make check``,
    ``make migration``, ``make status``). So such a column is compared here
    and the comparison stops. A computed expression is compared as Alembic
    does, loosely, and only warned about: Alembic cannot change it (drop the
    column and add it again). SQLite has no identity columns (an integer
    primary key is its rowid), so it reports none and nothing differs; on
    PostgreSQL the identity options are compared as Alembic compares them.
    """
    wanted, found = metadata_col.server_default, conn_col.server_default
    impl = autogen_context.migration_context.impl
    if isinstance(wanted, sa.Computed) or isinstance(found, sa.Computed):
        texts = [
            impl._normalize_computed_default(str(d.sqltext.compile(dialect=autogen_context.dialect)))
            if isinstance(d, sa.Computed)
            else ""
            for d in (wanted, found)
        ]
        if texts[0] != texts[1]:
            util.warn(f"{table}.{column}: its computed expression changed, which needs a drop and an add")
        return PriorityDispatchResult.STOP
    if not isinstance(wanted, sa.Identity) and not isinstance(found, sa.Identity):
        return PriorityDispatchResult.CONTINUE
    if autogen_context.dialect is not None and autogen_context.dialect.name == "sqlite":
        return PriorityDispatchResult.STOP
    alter_column_op.existing_server_default = found
    _, _, differs = impl._compare_identity_default(wanted, found)  # type: ignore[no-untyped-call]
    if differs:
        alter_column_op.modify_server_default = wanted
    return PriorityDispatchResult.STOP


def setup(plugin: Plugin) -> None:
    """Alembic's plugin protocol: ``dbtools.autogenerate.render`` registers this module as a plugin."""
    # A dialect's own comparators run before the default ones of the same priority,
    # so these run before Alembic's user-hook comparator, which would crash on them.
    for dialect in ("sqlite", "postgresql"):
        plugin.add_autogenerate_comparator(
            compare_generated, "column", "server_default", qualifier=dialect, priority=DispatchPriority.FIRST
        )
    plugin.add_autogenerate_comparator(
        sqlite_only.refuse_what_sqlite_cannot_hold, "schema", "sqlite_only", priority=DispatchPriority.FIRST
    )
    plugin.add_autogenerate_comparator(
        compare_enums_first, "schema", "enums", priority=DispatchPriority.FIRST
    )
    plugin.add_autogenerate_comparator(compare_enums_last, "schema", "enums", priority=DispatchPriority.LAST)
    plugin.add_autogenerate_comparator(compare_key_widths, "schema", "keys", priority=DispatchPriority.LAST)
    plugin.add_autogenerate_comparator(compare_comments, "schema", "comments", priority=DispatchPriority.LAST)
    # LAST: after checkconstraint_byname, whose additions and removals stand.
    plugin.add_autogenerate_comparator(
        compare_check_enums, "table", "checkconstraints", priority=DispatchPriority.LAST
    )


# --- Rewriting what the compared database reported -------------------------------


def warn_if_blind(context: MigrationContext) -> None:
    """Say when autogenerate against SQLite could not see PostgreSQL's facts the models need."""
    metadata = context.opts.get("target_metadata")
    sqlite = context.dialect.name == "sqlite"
    blind = _loaded(context) is None and not settings.sqlite_only()
    if blind and sqlite and isinstance(metadata, sa.MetaData) and _needs_facts(metadata):
        print(
            f"Note: {pgfacts.SNAPSHOT} is not at this database's revision, so PostgreSQL's enum "
            "types, key widths, comments and index predicates were not compared: run `make schema`, "
            "then generate again."
        )


def rewrite(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """Make the reflected parts of a generated script mean the same on both backends.

    env.py installs it, so plain ``alembic revision --autogenerate`` writes the same file.
    What the upgrade creates comes from the models; what the downgrade
    creates back (a dropped column or table, a changed type) comes from the
    compared database, in its dialect: it is written as the generic type, as
    PostgreSQL had it where the facts say.
    """
    facts = _loaded(context)
    for script in directives:
        _drop_dependants_first(script)
        for container, reflected in (
            *((upgrade, False) for upgrade in script.upgrade_ops_list),
            *((downgrade, True) for downgrade in script.downgrade_ops_list),
        ):
            container.ops = _comments_apart(container.ops)
            for table, op in _walk(container.ops):
                if isinstance(op, ops.AddColumnOp):
                    _fix_column(op.column, table, facts, reflected)
                    op.column.type = _without_check(op.column.type)
                elif isinstance(op, ops.CreateTableOp):
                    for column in op.columns:
                        if isinstance(column, Column):
                            _fix_column(column, op.table_name, facts, reflected)
                    _rowid_key(op)
                elif isinstance(op, ops.AlterColumnOp):
                    _fix_alter(op, facts, reflected)


def _comments_apart(operations: list[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
    """Alembic's comment changes (compared with PostgreSQL) as ``CommentOp``, after their table's batch."""
    out: list[ops.MigrateOperation] = []
    for op in operations:
        if not isinstance(op, ops.ModifyTableOps):
            out.append(op)
            continue
        comments: list[ops.MigrateOperation] = []
        kept: list[ops.MigrateOperation] = []
        for inner in op.ops:
            if isinstance(inner, ops.CreateTableCommentOp):
                comments.append(CommentOp(inner.table_name, None, inner.comment, inner.existing_comment))
            elif isinstance(inner, ops.DropTableCommentOp):
                comments.append(CommentOp(inner.table_name, None, None, inner.existing_comment))
            elif isinstance(inner, ops.AlterColumnOp) and inner.modify_comment is not False:
                new = inner.modify_comment
                comments.append(CommentOp(inner.table_name, inner.column_name, new, inner.existing_comment))
                inner.modify_comment = False
                if inner.has_changes() or inner.modify_name is not None:
                    kept.append(inner)
            else:
                kept.append(inner)
        op.ops = kept
        out.extend([op] if kept else [])
        out.extend(comments)
    return out


def _needs_facts(metadata: sa.MetaData) -> bool:
    # Whether each key is wide, not the columns themselves: a Column has no truth value.
    wide_keys = (
        isinstance(column.type, sa.Integer) and type(column.type) is not sa.Integer
        for table in metadata.tables.values()
        for column in table.primary_key.columns
    )
    commented = (
        table
        for table in metadata.tables.values()
        if table.comment or any(column.comment for column in table.columns)
    )
    partial = (
        index
        for table in metadata.tables.values()
        for index in table.indexes
        if index.dialect_options["postgresql"].get("where") is not None
    )
    return bool(model_enums(metadata)) or any(wide_keys) or any(commented) or any(partial)


def _walk(operations: Iterable[ops.MigrateOperation], table: str = "") -> Iterator[tuple[str, Any]]:
    for op in operations:
        if isinstance(op, ops.ModifyTableOps):
            yield from _walk(op.ops, op.table_name)
        else:
            yield getattr(op, "table_name", table), op


def _fix_column(column: Column[Any], table: str, facts: pgfacts.PgFacts | None, reflected: bool) -> None:
    enum = facts.enum_of(table, column.name) if facts is not None else None
    if enum is not None and facts is not None and not isinstance(column.type, sa.Enum):
        column.type = sa.Enum(*facts.enums[enum], name=enum)  # SQLite reported a VARCHAR
    elif reflected:
        column.type = generic_type(column.type, facts.columns.get((table, column.name)) if facts else None)
    if isinstance(column.type, sa.Boolean):
        column.server_default = _boolean_default(column.server_default)


def _without_check(type_: Any) -> Any:
    """A CHECK-backed enum that adds no CHECK of its own to an existing table.

    Its CHECK is an operation of its own, named by the naming convention
    (``checkconstraint_byname``, ``compare_check_enums``); the type adding it
    as well made PostgreSQL add it twice. A new table keeps the type's CHECK:
    it is created with the table, once.
    """
    if isinstance(type_, sa.Enum) and not type_.native_enum and type_.create_constraint:
        type_ = copy.copy(type_)
        type_.create_constraint = False
    return type_


def _fix_alter(op: ops.AlterColumnOp, facts: pgfacts.PgFacts | None, reflected: bool) -> None:
    """Booleans, enums and the reflected type of an ALTER COLUMN; a USING where PostgreSQL needs one.

    The reflected type is the existing one in the upgrade, and the one
    changed back to in the downgrade.
    """
    op.existing_type = _without_check(op.existing_type)
    if op.modify_type is not None:
        op.modify_type = _without_check(op.modify_type)
    if isinstance(op.existing_type, sa.Boolean) or isinstance(op.modify_type, sa.Boolean):
        op.existing_server_default = _boolean_default(op.existing_server_default)
        if op.modify_server_default is not False:
            op.modify_server_default = _boolean_default(op.modify_server_default)
    key = (op.table_name, op.column_name)
    enum = facts.enum_of(*key) if facts is not None else None
    had = facts.columns.get(key) if facts is not None else None  # on PostgreSQL, before the upgrade
    if op.modify_type is None or not reflected:
        if enum is not None and facts is not None and not isinstance(op.existing_type, sa.Enum):
            op.existing_type = sa.Enum(*facts.enums[enum], name=enum)
    elif enum is not None and facts is not None:
        op.modify_type = sa.Enum(*facts.enums[enum], name=enum)
    else:
        op.modify_type = generic_type(op.modify_type, had)
    if op.modify_type is not None:
        old = (None if reflected else had) or _pg_name(op.existing_type)
        new = (had if reflected else None) or _pg_name(op.modify_type)
        enums = frozenset(facts.enums if facts is not None else ()) | {
            str(t.name) for t in (op.existing_type, op.modify_type) if isinstance(t, sa.Enum) and t.name
        }
        try:
            cast = using(op.column_name, old, new, enums)
        except UnknownCast:
            op.kw[UNKNOWN_CAST] = (old, new)
        else:
            if cast is not None:
                op.kw["postgresql_using"] = cast


def _boolean_default(default: Any) -> Any:
    """SQLite reports a boolean default as 1 / 0: make it a boolean again."""
    arg = getattr(default, "arg", default)
    text = arg if isinstance(arg, str) else getattr(arg, "text", None)
    if isinstance(text, str) and text.strip("()").lower() in _BOOLEAN_TEXT:
        return DefaultClause(sa.true() if _BOOLEAN_TEXT[text.strip("()").lower()] else sa.false())
    return default


def generic_type(
    reflected: sa.types.TypeEngine[Any], postgresql_type: str | None
) -> sa.types.TypeEngine[Any]:
    """A reflected type as the generic type both backends create, as PostgreSQL had it where known.

    SQLite reflects ``DATETIME``, ``CHAR(32)`` for a uuid and ``INTEGER`` for
    a bigint key, which PostgreSQL refuses or narrows. The generic form of
    the reflected type keeps its length, precision and scale.
    """
    if isinstance(reflected, sa.Enum):
        return reflected
    known = _FROM_POSTGRESQL.get(base_type(postgresql_type)) if postgresql_type else None
    if known is not None:  # none of these has a length or precision to keep
        return known()
    try:
        return reflected.as_generic()
    except NotImplementedError:  # a type with no generic form: as reflected
        return reflected


def _pg_name(type_: Any) -> str:
    """A type as PostgreSQL names it (an enum by its name)."""
    try:
        return str(sa.types.to_instance(type_).compile(dialect=DIALECT))
    except Exception:  # a type PostgreSQL cannot render: its name, which fails to match any cast
        return str(type_)


def _rowid_key(op: ops.CreateTableOp) -> None:
    """A new table's BIGINT (or SMALLINT) key is SQLite's INTEGER, its rowid, there.

    SQLite numbers only an ``INTEGER PRIMARY KEY``; a ``BIGINT`` key is a
    plain column that every insert must fill (``NOT NULL constraint failed``).
    So the key is written ``sa.BigInteger().with_variant(sa.Integer(),
    "sqlite")``: 64-bit on both. The column is a copy: the upgrade's is the
    models' own.
    """
    key = op.to_table().autoincrement_column
    if key is None or not isinstance(key.type, sa.Integer) or type(key.type) is sa.Integer:
        return
    if "sqlite" in key.type._variant_mapping:
        return
    for index, column in enumerate(op.columns):
        if isinstance(column, Column) and column.name == key.name:
            widened = column._copy()
            widened.type = widened.type.with_variant(sa.Integer(), "sqlite")
            op.columns[index] = widened  # type: ignore[index]  # a list, typed as a Sequence


def _drop_dependants_first(script: MigrationScript) -> None:
    """Drop tables after the changes to the tables that stay, and a table before those it references.

    Alembic lists dropped tables (in no set order) before the changes to the
    tables that stay, so a foreign key to a dropped table was dropped after
    it: SQLite cannot reflect the table any more, PostgreSQL refuses the
    drop. The downgrade, the upgrade reversed, then creates each table
    before what references it.
    """
    for index, upgrade in enumerate(script.upgrade_ops_list):
        groups: dict[str, list[ops.MigrateOperation]] = {}
        rest: list[ops.MigrateOperation] = []
        dropped = {op.table_name for op in upgrade.ops if isinstance(op, ops.DropTableOp)}
        for op in upgrade.ops:
            name = getattr(op, "table_name", None)
            if name in dropped and isinstance(op, ops.ModifyTableOps | ops.DropTableOp):
                groups.setdefault(name, []).append(op)
            else:
                rest.append(op)
        if not groups:
            continue
        # What PostgreSQL drops after the tables (enum types no table uses) stays last.
        tail = len(rest)
        while tail and isinstance(rest[tail - 1], PostgresqlOnlyOp):
            tail -= 1
        ordered = [op for name in _dependants_first(upgrade.ops, dropped) for op in groups[name]]
        reordered = [*rest[:tail], *ordered, *rest[tail:]]
        if reordered != upgrade.ops:
            upgrade.ops = reordered
            script.downgrade_ops_list[index].ops = upgrade.reverse().ops


def _dependants_first(operations: list[ops.MigrateOperation], dropped: set[str]) -> list[str]:
    """The dropped tables, each before the dropped tables it references; by name otherwise."""
    references = {
        op.table_name: {
            referred
            for fk in op.to_table().foreign_keys
            # "schema.table.column" or "table.column": named, not resolved (the table may be gone)
            if (referred := fk.target_fullname.split(".")[-2]) in dropped and referred != op.table_name
        }
        for op in operations
        if isinstance(op, ops.DropTableOp)
    }
    order: list[str] = []
    while references:
        # A table no remaining table references goes first.
        free = sorted(t for t in references if not any(t in refs for refs in references.values()))
        free = free or sorted(references)[:1]  # a cycle: broken by name
        for table in free:
            order.append(table)
            del references[table]
    return order


def render_alter_column(
    alembic_renderer: Callable[[AutogenContext, ops.AlterColumnOp], str],
    autogen_context: AutogenContext,
    op: ops.AlterColumnOp,
) -> list[str]:
    """Alembic's ALTER COLUMN, with its ``postgresql_using``, or a marker where a USING must be written.

    Alembic's own renderer leaves out ``postgresql_using``; ``dbtools.autogenerate.render``
    puts this one in its place, with Alembic's given as the first argument.
    """
    text = alembic_renderer(autogen_context, op)
    cast = op.kw.get("postgresql_using")
    if cast is not None:
        text = f"{text[:-1]},\n{' ' * 11}postgresql_using={cast!r})"
    unknown = op.kw.get(UNKNOWN_CAST)
    if unknown is None:
        return [text]
    old, new = unknown
    return [
        f"{USING_MARKER} {op.table_name}.{op.column_name} from {old} to {new}",
        '# PostgreSQL does not cast it by itself: add postgresql_using="<expression>" below,',
        "# then delete these three lines. `make lint` refuses the migration until then.",
        text,
    ]

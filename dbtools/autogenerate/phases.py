"""A breaking change written as two revisions, *expand* then *contract*, so two application versions overlap.

During a rolling deploy the old and the new version of the application
share the database. A one-step rename (``RENAME COLUMN``) breaks every old
instance on its next query. So, on PostgreSQL, ``make migration`` writes an
accepted column rename as two revisions, the second depending on the first:

- **expand** (``make upgrade phase=expand``, before the new version rolls
  out) adds the new column, and a trigger that copies each write between the
  old and the new column, in both directions; backfills the rows written
  before, in keyset batches on the primary key, each batch its own short
  transaction (``FOR NO KEY UPDATE``); proves NOT NULL with a validated
  CHECK and builds the unique indexes concurrently. The old version writes
  the old column, the new version the new one; each sees the other's writes.
- **contract** (``make upgrade``, once no old instance is left) drops the
  trigger and the old column, and gives the new column its default: catalog
  changes only, a moment's lock.

The new column takes its default only in the contract: while both columns
exist, an insert that leaves the new column NULL is the old version's, and
the trigger fills it from the old one. This is pgroll's and Reshape's
design, inside Alembic, without their versioned schemas of views: the
application connects as before (no ``search_path``, PgBouncer's transaction
pooling keeps working).

On SQLite, where one application owns an embedded file, the expand revision
makes the whole one-step change (the rename as before) and the contract
revision does nothing: together they give exactly today's schema.

A rename is split only when everything that follows it can be rebuilt on
the new column online: its indexes and unique constraints, in one table
with a single-column primary key. Anything else stays the one-step rename,
with a comment saying why.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import util
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op
from alembic.operations import ops
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext

from dbtools import run, settings
from dbtools.autogenerate.pgsql import AUTOCOMMIT, DIALECT, ON_POSTGRESQL, execute, ident
from dbtools.autogenerate.renames import NameChange, Named, RenameOp


class Phase(enum.Enum):
    """Which side of a rolling deploy a revision runs on; written into the file as ``phase = "..."``."""

    EXPAND = "expand"
    CONTRACT = "contract"

    @property
    def mark(self) -> str:
        """The first line of the revision's ``upgrade()``; ``script.py.mako`` turns it into ``phase``."""
        return f"# Phase: {self.value}. {_WHEN[self]}"


_WHEN = {
    Phase.EXPAND: "`make upgrade phase=expand` runs it before the new application version rolls out.",
    Phase.CONTRACT: "`make upgrade` runs it once no instance of the old application version is left.",
}


@dataclass(frozen=True)
class Index:
    """An index or unique constraint on the renamed column, rebuilt on the new one."""

    name: str  # its name on the column it is built for
    columns: tuple[str, ...]
    unique: bool
    constraint: bool  # a UNIQUE constraint (adopts its index), not a plain index

    def on(self, old: str, new: str, name: str) -> Index:
        columns = tuple(new if column == old else column for column in self.columns)
        return Index(name, columns, self.unique, self.constraint)


@dataclass(frozen=True)
class Column:
    """One side of a column pair: what it is called, and what it needs on PostgreSQL."""

    name: str
    indexes: tuple[Index, ...]


@dataclass(frozen=True)
class Pair:
    """A column and its replacement, kept in sync while both exist.

    ``up`` turns an old value into a new one and ``down`` back, as SQL over
    ``{}`` (the value); a rename copies as it is.
    """

    table: str
    key: str  # the single-column primary key the backfill walks
    key_type: str
    type: str  # the column's PostgreSQL type
    nullable: bool
    default: str | None  # the column's server default, as SQL
    old: Column
    new: Column
    up: str = "{}"
    down: str = "{}"

    @property
    def trigger(self) -> str:
        return f"{self.table}_{self.new.name}_sync"


class ExpandOp(ops.MigrateOperation):
    """Expand: the new column grown beside the old one (upgrade), or dropped again (downgrade)."""

    def __init__(self, pair: Pair, rename: RenameOp, *, grows: bool = True) -> None:
        self.pair, self.rename, self.grows = pair, rename, grows

    def reverse(self) -> ExpandOp:
        return ExpandOp(self.pair, self.rename.reverse(), grows=not self.grows)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return self.rename.to_diff_tuple()


class ContractOp(ops.MigrateOperation):
    """Contract: the old column dropped (upgrade), or grown back from the new one (downgrade)."""

    def __init__(self, pair: Pair, *, drops: bool = True) -> None:
        self.pair, self.drops = pair, drops

    def reverse(self) -> ContractOp:
        return ContractOp(self.pair, drops=not self.drops)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("contract", self.pair.table, self.pair.old.name)


# --- splitting --------------------------------------------------------------


def split(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """``process_revision_directives``: a column rename becomes an expand revision and a contract one."""
    if settings.sqlite_only() or not directives or directives[0].upgrade_ops is None:
        return  # an embedded SQLite file has one application: the one-step form is right
    if run.in_context(context).rename_decisions is None:
        return  # not make migration
    script = directives[0]
    upgrade = script.upgrade_ops
    assert upgrade is not None
    metadata = context.opts.get("target_metadata")
    renames = [op for op in upgrade.ops if isinstance(op, RenameOp) and op.table is not None]
    if len(renames) != 1 or not isinstance(metadata, sa.MetaData):
        return  # one breaking change per pair of revisions: a reviewer reads each window alone
    rename = renames[0]
    pair, why = _pair(metadata, rename)
    if pair is None:
        print(f"Written in one step, not expand/contract: {why}")
        return
    upgrade.ops[upgrade.ops.index(rename)] = ExpandOp(pair, rename)
    script.downgrade_ops = upgrade.reverse()
    contract = ops.UpgradeOps([ContractOp(pair)])
    directives.append(
        MigrationScript(
            rev_id=util.rev_id(),
            message=f"{script.message}, contract",
            upgrade_ops=contract,
            downgrade_ops=contract.reverse(),
            imports=set(),
            head=script.rev_id,
        )
    )


def _pair(metadata: sa.MetaData, rename: RenameOp) -> tuple[Pair | None, str]:
    """The column pair a rename keeps in sync, or None and why it cannot be split."""
    assert rename.table is not None
    table = metadata.tables.get(rename.table)
    if table is None or rename.new not in table.c:
        return None, f"{rename.table}.{rename.new} is not in the models"
    key = list(table.primary_key.columns)
    if len(key) != 1:
        return None, f"the backfill walks a single-column primary key, and {rename.table} has none"
    others = [name for name in rename.names if name != rename.table]
    changes = rename.names.get(rename.table, [])
    unsupported = [change.old for change in changes if _index(change) is None]
    if others or unsupported:
        return None, (
            f"what follows the rename ({', '.join(others + unsupported)}) is not an index or a unique "
            "constraint of the table, which expand rebuilds online"
        )
    column = table.c[rename.new]
    indexes = [(index, change) for index, change in ((_index(change), change) for change in changes) if index]
    olds = tuple(index.on(rename.new, rename.old, change.old) for index, change in indexes)
    news = tuple(index.on(rename.old, rename.new, change.new) for index, change in indexes)
    return Pair(
        table=rename.table,
        key=key[0].name,
        key_type=_compiled(key[0].type),
        type=_compiled(column.type),
        nullable=bool(column.nullable),
        default=_default(column),
        old=Column(rename.old, olds),
        new=Column(rename.new, news),
    ), ""


def _index(change: NameChange) -> Index | None:
    """The index or unique constraint a name change moves to the new column; None for anything else.

    Its columns as the rename's ``create`` names them (the new column's name among them).
    """
    created = change.create
    if change.kind is Named.INDEX and isinstance(created, ops.CreateIndexOp):
        columns = tuple(str(column) for column in created.columns)
        return Index(change.new, columns, bool(created.unique), constraint=False)
    if change.kind is Named.CONSTRAINT and isinstance(created, ops.CreateUniqueConstraintOp):
        return Index(change.new, tuple(created.columns), unique=True, constraint=True)
    return None


def _compiled(type_: Any) -> str:
    return str(sa.types.to_instance(type_).compile(dialect=DIALECT))


def _default(column: sa.Column[Any]) -> str | None:
    default = column.server_default
    if default is None:
        return None
    arg: Any = getattr(default, "arg", default)
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    return str(arg.compile(dialect=DIALECT))


# --- rendering --------------------------------------------------------------

# Lines carry no indentation of their own: Mako's PythonPrinter indents (see autogenerate.pgsql).


def render_expand(autogen_context: AutogenContext, op: ExpandOp) -> list[str]:
    """PostgreSQL: the new column grown (or dropped again); SQLite: the one-step rename (or back)."""
    pair = op.pair
    if op.grows:
        postgresql = [
            "# PostgreSQL: the new column beside the old, a trigger copying each write both ways,",
            "# the rows before backfilled in batches; the old application version keeps working.",
            *_grow(autogen_context, pair, pair.new, pair.old),
        ]
    else:
        postgresql = [
            "# PostgreSQL: the trigger and the new column dropped; the old column kept every write.",
            execute(f"DROP TRIGGER IF EXISTS {ident(pair.trigger)} ON {ident(pair.table)}"),
            execute(f"DROP FUNCTION IF EXISTS {ident(pair.trigger)}()"),
            execute(f"ALTER TABLE {ident(pair.table)} DROP COLUMN IF EXISTS {ident(pair.new.name)}"),
        ]
    return [
        *([Phase.EXPAND.mark] if op.grows else []),
        ON_POSTGRESQL,
        *postgresql,
        "else:",
        "# SQLite: one application owns the file, so the whole change is made here, in one step.",
        *_sqlite_rename(autogen_context, op.rename),
        "",
    ]


def render_contract(autogen_context: AutogenContext, op: ContractOp) -> list[str]:
    """PostgreSQL: the old column dropped (or grown back from the new one); SQLite: nothing."""
    pair = op.pair
    table = ident(pair.table)
    if op.drops:
        lines = [
            "# PostgreSQL: catalog changes only, a moment's lock: the trigger and the old column go,",
            "# the new column takes its default.",
            execute(f"DROP TRIGGER IF EXISTS {ident(pair.trigger)} ON {table}"),
            execute(f"DROP FUNCTION IF EXISTS {ident(pair.trigger)}()"),
            execute(f"ALTER TABLE {table} DROP COLUMN {ident(pair.old.name)}"),
            *_set_default(pair, pair.new),
        ]
    else:
        lines = [
            "# PostgreSQL: back to the expand window: the old column grown again from the new one.",
            *_drop_default(pair, pair.new),
            *_grow(autogen_context, pair, pair.old, pair.new),
        ]
    return [
        *([Phase.CONTRACT.mark] if op.drops else []),
        ON_POSTGRESQL,
        *lines,
        "",
        "# SQLite: nothing to do; the expand revision made the whole change.",
    ]


def _grow(autogen_context: AutogenContext, pair: Pair, target: Column, source: Column) -> list[str]:
    """``target`` added beside ``source``, kept in sync, backfilled, its constraints proven online.

    Cut in three by the ``autocommit_block()``, so a killed run resumes
    (``dbtools.runtime.resume``): the column, the trigger and a NOT VALID
    CHECK commit first; the block (backfill, VALIDATE, concurrent index
    builds) runs whole again if it was cut, which each of its statements
    allows; then catalog changes adopt what the block proved.
    """
    table, column = ident(pair.table), ident(target.name)
    check = ident(f"ck_{pair.table}_{target.name}_not_null")
    lines = [
        execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {pair.type}"),
        execute(_function(pair)),
        execute(f"DROP TRIGGER IF EXISTS {ident(pair.trigger)} ON {table}"),
        execute(
            f"CREATE TRIGGER {ident(pair.trigger)} BEFORE INSERT OR UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {ident(pair.trigger)}()"
        ),
    ]
    if not pair.nullable:
        lines += [
            execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}"),
            execute(f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID"),
        ]
    lines += [
        "# Each batch its own short transaction: writers wait for one batch of rows at most.",
        AUTOCOMMIT,
        _backfill(pair, target, source),
    ]
    if not pair.nullable:
        lines.append(execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}"))
    for index in target.indexes:
        lines += _build(autogen_context, pair.table, index)
    lines.append("")
    if not pair.nullable:
        lines += [
            execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL"),
            execute(f"ALTER TABLE {table} DROP CONSTRAINT {check}"),
        ]
    for index in target.indexes:
        if index.constraint:
            name = ident(index.name)
            lines.append(execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}"))
    if target is pair.old:  # grown back: the old column as it was, its default included
        lines += _set_default(pair, target)
    return lines


def _function(pair: Pair) -> str:
    """The trigger function: each write copied to the other column; a touched row filled.

    An insert that gives the new column is the new version's (the new
    column has no default while both exist); one that leaves it NULL is the
    old version's. An update copies the column it changed; one that changed
    neither (the backfill's touch) fills whichever is NULL.
    """
    old, new = (f"NEW.{ident(column.name)}" for column in (pair.old, pair.new))
    up, down = pair.up.format(old), pair.down.format(new)
    return (
        f"CREATE OR REPLACE FUNCTION {ident(pair.trigger)}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF TG_OP = 'INSERT' THEN "
        f"IF {new} IS NOT NULL THEN {old} := {down}; ELSE {new} := {up}; END IF; "
        f"ELSIF {new} IS DISTINCT FROM OLD.{ident(pair.new.name)} THEN {old} := {down}; "
        f"ELSIF {old} IS DISTINCT FROM OLD.{ident(pair.old.name)} THEN {new} := {up}; "
        f"ELSIF {new} IS NULL THEN {new} := {up}; "
        f"ELSIF {old} IS NULL THEN {old} := {down}; "
        "END IF; RETURN NEW; END $$"
    )


def _backfill(pair: Pair, target: Column, source: Column) -> str:
    """Touch every row whose ``target`` is still NULL, keyset-batched on the primary key.

    Each batch locks its rows in key order (``FOR NO KEY UPDATE``, which
    lets foreign keys to them through) and commits (a ``DO`` block may, run
    outside a transaction), so a writer waits for one batch at most. Only
    rows not yet filled are touched, so a killed backfill run again skips
    what it did. The batch size and the pause between batches are the
    session's ``dbtools.backfill_batch`` and ``dbtools.backfill_pause``, which
    a run sets from ``MIGRATION_BACKFILL_BATCH`` and ``MIGRATION_BACKFILL_PAUSE``
    (``dbtools.runtime.locking``); 1,000 rows and no pause without them.
    """
    table, key = ident(pair.table), ident(pair.key)
    src, dst = ident(source.name), ident(target.name)
    return execute(
        f"DO $$ DECLARE lower {pair.key_type}; upper {pair.key_type}; "
        "size integer := coalesce(nullif(current_setting('dbtools.backfill_batch', true), ''), '1000'); "
        "pause float := coalesce(nullif(current_setting('dbtools.backfill_pause', true), ''), '0'); "
        f"BEGIN SELECT min({key}) INTO lower FROM {table}; "
        "WHILE lower IS NOT NULL LOOP "
        f"SELECT max(k) INTO upper FROM (SELECT {key} AS k FROM {table} WHERE {key} >= lower "
        f"ORDER BY {key} LIMIT size) AS batch; "
        f"UPDATE {table} SET {src} = {src} WHERE {key} IN (SELECT {key} FROM {table} "
        f"WHERE {key} >= lower AND {key} <= upper AND {dst} IS NULL AND {src} IS NOT NULL "
        f"ORDER BY {key} FOR NO KEY UPDATE); "
        "COMMIT; PERFORM pg_sleep(pause); "
        f"SELECT min({key}) INTO lower FROM {table} WHERE {key} > upper; "
        "END LOOP; END $$"
    )


def _build(autogen_context: AutogenContext, table: str, index: Index) -> list[str]:
    """Built concurrently, after dropping what a cut build left INVALID (as ``nonblocking``)."""
    drop = ops.DropIndexOp(index.name, table_name=table, if_exists=True, postgresql_concurrently=True)
    create = ops.CreateIndexOp(
        index.name,
        table,
        list(index.columns),
        unique=index.unique,
        if_not_exists=True,
        postgresql_concurrently=True,
    )
    return [*render_op(autogen_context, drop), *render_op(autogen_context, create)]


def _set_default(pair: Pair, column: Column) -> list[str]:
    if pair.default is None:
        return []
    table, name = ident(pair.table), ident(column.name)
    return [execute(f"ALTER TABLE {table} ALTER COLUMN {name} SET DEFAULT {pair.default}")]


def _drop_default(pair: Pair, column: Column) -> list[str]:
    if pair.default is None:
        return []
    return [execute(f"ALTER TABLE {ident(pair.table)} ALTER COLUMN {ident(column.name)} DROP DEFAULT")]


def _sqlite_rename(autogen_context: AutogenContext, rename: RenameOp) -> list[str]:
    """The rename as SQLite runs it today: the column, then the names that follow it, in one batch."""
    assert rename.table is not None
    lines = [f"op.alter_column({rename.table!r}, {rename.old!r}, new_column_name={rename.new!r})"]
    changes: Sequence[NameChange] = rename.names.get(rename.table, [])
    if changes:
        batch = ops.ModifyTableOps(
            rename.table, [change.drop for change in changes] + [change.create for change in changes]
        )
        lines += render_op(autogen_context, batch)
    return lines

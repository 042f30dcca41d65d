"""A breaking change written as two revisions, *expand* then *contract*, so two application versions overlap.

During a rolling deploy the old and the new version of the application
share the database. A one-step change (``RENAME COLUMN``, ``SET NOT NULL``,
``DROP COLUMN``) breaks every old instance on its next query. So, on
PostgreSQL, ``make migration`` writes each breaking change below as two
revisions, the second depending on the first; ``make upgrade phase=expand``
runs the first before the new version rolls out, ``make upgrade`` the
second once no old instance is left (``dbtools.runtime.phases``):

- a **column rename** (``ExpandOp``/``ContractOp``): expand adds the new
  column, and a trigger that copies each write between the old and the new
  column in both directions; backfills the rows written before, in keyset
  batches on the primary key, each batch its own short transaction (``FOR
  NO KEY UPDATE``); proves NOT NULL with a validated CHECK and builds the
  unique indexes concurrently. Contract drops the trigger and the old
  column and gives the new one its default: catalog changes only.
- a **type change** PostgreSQL would make by rewriting the table: the same,
  with a shadow column of the new type and casts both ways (``pgsql.using``);
  the contract drops the old column and renames the shadow in its place.
- **NOT NULL** on a nullable column (``NotNullOp``): a trigger fills the
  old version's NULL writes from the column's default, a backfill the rows
  before, a CHECK is validated; contract runs ``SET NOT NULL``, which trusts
  it, and drops the CHECK and the trigger.
- a **dropped column** (``DropLaterOp``): kept until the contract, with a
  default from its type if the new version's inserts could not leave it out.
- a **table rename** (``ViewOp``): expand renames it and leaves a view under
  the old name, which PostgreSQL updates through; contract drops the view.

While both columns of a pair exist, an insert that leaves the new column
NULL is the old version's, and the trigger fills it from the old one; so
the new column takes its default only in the contract. This is pgroll's and
Reshape's design, inside Alembic, without their versioned schemas of views:
the application connects as before (no ``search_path``, PgBouncer's
transaction pooling keeps working).

On SQLite, where one application owns an embedded file, the expand revision
makes the whole one-step change and the contract revision does nothing:
together they give exactly today's schema.

What cannot be carried over online (a rename with more than indexes and
unique constraints following it, a type change of a key or an indexed
column, no known cast, several breaking changes at once) stays one step,
and ``make migration`` prints why.

This module decides the split and holds the operations; what each renders
as, the SQL of the triggers, the backfill and the views, is ``phasesql``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import util
from alembic.operations import ops
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext

from dbtools import run, settings
from dbtools.autogenerate.nonblocking import rewrites
from dbtools.autogenerate.pgsql import (
    DIALECT,
    UnknownCast,
    using,
)
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
    # A type change: ``new`` is a shadow column of the new type, which the contract renames to
    # the old column's name once that is dropped; ``old_type`` is the old column's type.
    old_type: str = ""

    @property
    def swaps(self) -> bool:
        return bool(self.old_type)

    @property
    def trigger(self) -> str:
        return f"{self.table}_{self.new.name}_sync"

    def type_of(self, column: Column) -> str:
        return self.old_type if column is self.old and self.swaps else self.type


class ExpandOp(ops.MigrateOperation):
    """Expand: the new column grown beside the old one (upgrade), or dropped again (downgrade)."""

    def __init__(self, pair: Pair, one_step: RenameOp | ops.ModifyTableOps, *, grows: bool = True) -> None:
        # The change as one step, for SQLite: a rename, or a table's type change.
        self.pair, self.one_step, self.grows = pair, one_step, grows

    def reverse(self) -> ExpandOp:
        return ExpandOp(self.pair, self.one_step.reverse(), grows=not self.grows)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("expand", self.pair.table, self.pair.old.name)


class ContractOp(ops.MigrateOperation):
    """Contract: the old column dropped (upgrade), or grown back from the new one (downgrade)."""

    def __init__(self, pair: Pair, *, drops: bool = True) -> None:
        self.pair, self.drops = pair, drops

    def reverse(self) -> ContractOp:
        return ContractOp(self.pair, drops=not self.drops)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("contract", self.pair.table, self.pair.old.name)


class ViewOp(ops.MigrateOperation):
    """A renamed table: expand renames it and leaves a view under the old name; contract drops the view."""

    def __init__(self, rename: RenameOp, *, phase: Phase, forward: bool = True) -> None:
        self.rename, self.phase, self.forward = rename, phase, forward

    def reverse(self) -> ViewOp:
        rename = self.rename.reverse() if self.phase is Phase.EXPAND else self.rename
        return ViewOp(rename, phase=self.phase, forward=not self.forward)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return self.rename.to_diff_tuple()


class DropLaterOp(ops.MigrateOperation):
    """A dropped column: expand lets the new version's inserts leave it out; contract drops it.

    ``drop`` is Alembic's own operation (its reverse adds the column back).
    ``default`` is what expand gives a NOT NULL column without a default, as SQL;
    None when the new version's inserts need nothing (nullable, or a default).
    """

    def __init__(
        self, drop: ops.DropColumnOp, default: str | None, *, phase: Phase, forward: bool = True
    ) -> None:
        self.drop, self.default, self.phase, self.forward = drop, default, phase, forward

    def reverse(self) -> DropLaterOp:
        return DropLaterOp(self.drop, self.default, phase=self.phase, forward=not self.forward)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return self.drop.to_diff_tuple()


class NotNullOp(ops.MigrateOperation):
    """NOT NULL on a nullable column: expand fills NULL writes and proves it; contract sets it.

    ``alter`` is Alembic's operation (the SQLite step, and the rest of the
    change: a default, a comment); ``fill`` the SQL a NULL becomes, None when
    unknown (the file then says where to write it, and ``make lint`` refuses it).
    """

    def __init__(
        self, alter: ops.AlterColumnOp, keyed: Keyed, fill: str | None, *, phase: Phase, forward: bool = True
    ) -> None:
        self.alter, self.keyed, self.fill, self.phase, self.forward = alter, keyed, fill, phase, forward

    def reverse(self) -> NotNullOp:
        return NotNullOp(self.alter, self.keyed, self.fill, phase=self.phase, forward=not self.forward)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("not_null", self.alter.table_name, self.alter.column_name)

    @property
    def trigger(self) -> str:
        return f"{self.alter.table_name}_{self.alter.column_name}_fill"

    @property
    def check(self) -> str:
        return f"ck_{self.alter.table_name}_{self.alter.column_name}_not_null"


@dataclass(frozen=True)
class Keyed:
    """A table and the single-column primary key its backfill walks."""

    table: str
    key: str
    key_type: str


@dataclass
class Split:
    """One breaking change: the operation it replaces in the upgrade, and what each phase runs instead."""

    replaced: ops.MigrateOperation
    container: ops.UpgradeOps | ops.ModifyTableOps
    expand: ops.MigrateOperation
    contract: ops.MigrateOperation


# --- splitting --------------------------------------------------------------


def split(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """``process_revision_directives``: a breaking change becomes an expand revision and a contract one.

    One breaking change per pair of revisions, so a reviewer reads each
    window alone; a migration with several is written in one step, and says so.
    """
    if settings.sqlite_only() or not directives or directives[0].upgrade_ops is None:
        return  # an embedded SQLite file has one application: the one-step form is right
    if run.in_context(context).rename_decisions is None:
        return  # not make migration
    script = directives[0]
    upgrade = script.upgrade_ops
    metadata = context.opts.get("target_metadata")
    if upgrade is None or not isinstance(metadata, sa.MetaData):
        return
    found: list[Split] = []
    refused: list[str] = []
    for candidate, container in _breaking(upgrade):
        made, why = _split_one(metadata, upgrade, candidate, container)
        if made is None:
            refused.append(why)
        else:
            found.append(made)
    if refused or len(found) > 1:
        why = (
            "; ".join(refused) or f"{len(found)} breaking changes in one migration (make them one at a time)"
        )
        print(f"Written in one step, not expand/contract: {why}")
        return
    if not found:
        return
    (change,) = found
    _replace(upgrade, change.container, change.replaced, change.expand)
    upgrade.ops = [op for op in upgrade.ops if not (isinstance(op, ops.ModifyTableOps) and not op.ops)]
    script.downgrade_ops = upgrade.reverse()
    contract = ops.UpgradeOps([change.contract])
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


def _breaking(
    upgrade: ops.UpgradeOps,
) -> list[tuple[ops.MigrateOperation, ops.UpgradeOps | ops.ModifyTableOps]]:
    """The operations that break the old application version, each with the list that holds it."""
    found: list[tuple[ops.MigrateOperation, ops.UpgradeOps | ops.ModifyTableOps]] = []
    created = {op.table_name for op in upgrade.ops if isinstance(op, ops.CreateTableOp | ops.DropTableOp)}
    for op in upgrade.ops:
        if isinstance(op, RenameOp):
            found.append((op, upgrade))
        elif isinstance(op, ops.ModifyTableOps) and op.table_name not in created:
            found += [(inner, op) for inner in op.ops if isinstance(inner, ops.DropColumnOp)]
            found += [(inner, op) for inner in op.ops if _sets_not_null(inner) or _rewrites_type(inner)]
    return found


def _split_one(
    metadata: sa.MetaData,
    upgrade: ops.UpgradeOps,
    op: ops.MigrateOperation,
    container: ops.UpgradeOps | ops.ModifyTableOps,
) -> tuple[Split | None, str]:
    if isinstance(op, RenameOp) and op.table is not None:
        pair, why = _pair(metadata, op)
        if pair is None:
            return None, why
        return Split(op, container, ExpandOp(pair, op), ContractOp(pair)), ""
    if isinstance(op, ops.AlterColumnOp) and op.modify_type is not None:
        return _type_change(metadata, op, container)
    if isinstance(op, RenameOp):
        return Split(op, container, ViewOp(op, phase=Phase.EXPAND), ViewOp(op, phase=Phase.CONTRACT)), ""
    if isinstance(op, ops.AlterColumnOp):
        return _not_null(metadata, op, container)
    assert isinstance(op, ops.DropColumnOp)
    return _drop_later(upgrade, op, container)


def _rewrites_type(op: ops.MigrateOperation) -> bool:
    """A type change PostgreSQL makes by rewriting the table under ACCESS EXCLUSIVE."""
    return (
        isinstance(op, ops.AlterColumnOp)
        and op.modify_type is not None
        and op.modify_name is None
        and rewrites(op.existing_type, op.modify_type)
    )


def _type_change(
    metadata: sa.MetaData, op: ops.AlterColumnOp, container: ops.UpgradeOps | ops.ModifyTableOps
) -> tuple[Split | None, str]:
    """A shadow column of the new type, kept in sync by casts both ways, renamed in place by the contract.

    Only a plain column: one no index, key or constraint but NOT NULL names,
    whose type is all that changes, with casts both ways known
    (``pgsql.using``); else the one-step change with its recipe.
    """
    name = f"{op.table_name}.{op.column_name}"
    found = _keyed_column(metadata, op.table_name, op.column_name)
    if isinstance(found, str):
        return None, found
    table, column, key = found
    indexed = any(column.name in index.columns for index in table.indexes) or any(
        isinstance(constraint, sa.UniqueConstraint | sa.ForeignKeyConstraint)
        and column.name in constraint.columns
        for constraint in table.constraints
    )
    others = [other for other in container.ops if other is not op]
    if column.primary_key or indexed or column.foreign_keys or others:
        return None, (
            f"the type of {name} changes with its index, key or other changes of its table, which a "
            "shadow column does not carry over"
        )
    if op.modify_server_default is not False or op.modify_nullable is not None:
        return None, f"the type of {name} changes with its default or nullability"
    old, new = _compiled(op.existing_type), _compiled(op.modify_type)
    try:
        up = using(VALUE, old, new) or VALUE
        down = using(VALUE, new, old) or VALUE
    except UnknownCast:
        return None, f"no cast from {old} to {new} and back is known for {name}"
    shadow = f"_new_{op.column_name}"
    pair = Pair(
        table=op.table_name,
        key=key.name,
        key_type=_compiled(key.type),
        type=new,
        nullable=bool(column.nullable),
        default=_default(column),
        old=Column(op.column_name, ()),
        new=Column(shadow, ()),
        up=up.replace(VALUE, "{}"),
        down=down.replace(VALUE, "{}"),
        old_type=old,
    )
    one_step = ops.ModifyTableOps(op.table_name, [op], schema=getattr(container, "schema", None))
    return Split(op, container, ExpandOp(pair, one_step), ContractOp(pair)), ""


def _keyed_column(
    metadata: sa.MetaData, table_name: str, column_name: str
) -> tuple[sa.Table, sa.Column[Any], sa.Column[Any]] | str:
    """The models' table, its column, and the single-column key a backfill walks; else why not."""
    table = metadata.tables.get(table_name)
    if table is None or column_name not in table.c:
        return f"{table_name}.{column_name} is not in the models"
    key = list(table.primary_key.columns)
    if len(key) != 1:
        return unkeyed(table)
    return table, table.c[column_name], key[0]


def unkeyed(table: sa.Table) -> str:
    """Why a table without a single-column primary key gets no expand/contract: the backfill needs one.

    The backfill walks the table in keyset batches on that key, so a batch is
    a short range a killed run can skip past; without one it would be one long
    UPDATE. A dropped column or a renamed table needs no backfill, and splits.
    """
    key = [column.name for column in table.primary_key.columns]
    has = f"a primary key of {len(key)} columns ({', '.join(key)})" if key else "no primary key"
    return (
        f"{table.name} has {has}, and the backfill walks a single-column primary key in batches "
        "(give the table one, e.g. an identity column, to have the change split)"
    )


# A placeholder column name the casts are written over, then replaced by ``{}``.
VALUE = "value_placeholder"


def _sets_not_null(op: ops.MigrateOperation) -> bool:
    """NOT NULL added to a column that keeps its type and name (as ``nonblocking``'s online form)."""
    return (
        isinstance(op, ops.AlterColumnOp)
        and op.modify_nullable is False
        and op.existing_nullable is not False
        and op.modify_type is None
        and op.modify_name is None
    )


def _not_null(
    metadata: sa.MetaData, op: ops.AlterColumnOp, container: ops.UpgradeOps | ops.ModifyTableOps
) -> tuple[Split | None, str]:
    """The column's NULL writes filled from its default while the old version may still write them."""
    found = _keyed_column(metadata, op.table_name, op.column_name)
    if isinstance(found, str):
        return None, found
    _, column, key = found
    keyed = Keyed(op.table_name, key.name, _compiled(key.type))
    fill = _default(column)
    expand = NotNullOp(op, keyed, fill, phase=Phase.EXPAND)
    return Split(op, container, expand, NotNullOp(op, keyed, fill, phase=Phase.CONTRACT)), ""


def _drop_later(
    upgrade: ops.UpgradeOps, op: ops.DropColumnOp, container: ops.UpgradeOps | ops.ModifyTableOps
) -> tuple[Split | None, str]:
    """A dropped column the old version may still write: kept until the contract, insertable without it."""
    column = op.to_column()
    name = f"{op.table_name}.{op.column_name}"
    if any(not isinstance(other, ops.ModifyTableOps | RenameOp) for other in upgrade.ops):
        return (
            None,
            f"dropping {name} goes with other changes (its type, say) that cannot wait for a contract",
        )
    default: str | None = None
    if not column.nullable and column.server_default is None:
        default = _type_default(column.type)
        unique = any(
            isinstance(other, ops.DropConstraintOp | ops.DropIndexOp) for other in container.ops
        )  # a constraint or index goes with it: a default for every new row could collide
        if default is None or unique:
            return None, (
                f"{name} is NOT NULL without a default, and no default the new version's inserts could "
                "share is known for it"
            )
    expand = DropLaterOp(op, default, phase=Phase.EXPAND)
    return Split(op, container, expand, DropLaterOp(op, default, phase=Phase.CONTRACT)), ""


def _type_default(type_: Any) -> str | None:
    """A default every row may share, from the column's type; None when none is obvious."""
    if isinstance(type_, sa.Boolean):
        return "false"
    if isinstance(type_, sa.Integer | sa.Numeric):
        return "0"
    if isinstance(type_, sa.String):
        return "''"
    if isinstance(type_, sa.DateTime | sa.Date):
        return "CURRENT_TIMESTAMP"
    return None


def _replace(
    upgrade: ops.UpgradeOps,
    container: ops.UpgradeOps | ops.ModifyTableOps,
    old: ops.MigrateOperation,
    new: ops.MigrateOperation,
) -> None:
    """``new`` in ``old``'s place; a column's drop leaves its table's changes, for the top level."""
    if container is upgrade:
        upgrade.ops[upgrade.ops.index(old)] = new
        return
    container.ops.remove(old)
    upgrade.ops.insert(upgrade.ops.index(container) + 1, new)


def _pair(metadata: sa.MetaData, rename: RenameOp) -> tuple[Pair | None, str]:
    """The column pair a rename keeps in sync, or None and why it cannot be split."""
    assert rename.table is not None
    found = _keyed_column(metadata, rename.table, rename.new)
    if isinstance(found, str):
        return None, found
    _, column, key = found
    others = [name for name in rename.names if name != rename.table]
    changes = rename.names.get(rename.table, [])
    unsupported = [change.old for change in changes if _index(change) is None]
    if others or unsupported:
        return None, (
            f"what follows the rename ({', '.join(others + unsupported)}) is not an index or a unique "
            "constraint of the table, which expand rebuilds online"
        )
    indexes = [(index, change) for index, change in ((_index(change), change) for change in changes) if index]
    olds = tuple(index.on(rename.new, rename.old, change.old) for index, change in indexes)
    news = tuple(index.on(rename.old, rename.new, change.new) for index, change in indexes)
    return Pair(
        table=rename.table,
        key=key.name,
        key_type=_compiled(key.type),
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

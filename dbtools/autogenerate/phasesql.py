"""What each expand/contract operation renders as (``dbtools.autogenerate.phases`` decides the split).

The PostgreSQL branch of each revision: the shadow or new column, the
trigger copying each write both ways, the keyset backfill as one ``DO``
block that commits each batch and reports its progress
(``dbtools.runtime.backfill``), the validated CHECK behind a ``SET NOT
NULL``, the concurrent index builds, the view under a table's old name; and
the SQLite branch, today's one-step change. Lines carry no indentation of
their own: Mako's PythonPrinter indents (see ``autogenerate.pgsql``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op
from alembic.operations import ops

from dbtools.autogenerate.pgsql import (
    AUTOCOMMIT,
    FILL_MARKER,
    ON_POSTGRESQL,
    execute,
    ident,
    literal,
)
from dbtools.autogenerate.phases import (
    Column,
    ContractOp,
    DropLaterOp,
    ExpandOp,
    Index,
    Keyed,
    NotNullOp,
    Pair,
    Phase,
    ViewOp,
)
from dbtools.autogenerate.renames import NameChange, RenameOp, render_rename

# Lines carry no indentation of their own: Mako's PythonPrinter indents (see autogenerate.pgsql).


def render_expand(autogen_context: AutogenContext, op: ExpandOp) -> list[str]:
    """PostgreSQL: the new column grown (or dropped again); SQLite: the one-step rename (or back)."""
    pair = op.pair
    if op.grows:
        postgresql = [
            *(
                [
                    "# PostgreSQL: a shadow column of the new type beside the old, a trigger casting each",
                    "# write both ways, the rows before backfilled in batches; no table rewrite. The",
                    "# contract drops the old column and gives the shadow its name.",
                ]
                if pair.swaps
                else [
                    "# PostgreSQL: the new column beside the old, a trigger copying each write both ways,",
                    "# the rows before backfilled in batches; the old application version keeps working.",
                ]
            ),
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
        *(
            _sqlite_rename(autogen_context, op.one_step)
            if isinstance(op.one_step, RenameOp)
            else render_op(autogen_context, op.one_step)
        ),
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
            *_swap(pair, pair.new.name, pair.old.name),
            *_set_default(pair, Column(pair.old.name if pair.swaps else pair.new.name, ())),
        ]
    else:
        lines = [
            "# PostgreSQL: back to the expand window: the old column grown again from the new one.",
            *_swap(pair, pair.old.name, pair.new.name),
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
        execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {pair.type_of(target)}"),
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
        _backfill(
            Keyed(pair.table, pair.key, pair.key_type),
            touch=source.name,
            where=f"{ident(target.name)} IS NULL AND {ident(source.name)} IS NOT NULL",
        ),
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


def _backfill(keyed: Keyed, *, touch: str, where: str) -> str:
    """Touch (``SET touch = touch``) every row ``where`` holds, keyset-batched on the primary key.

    The trigger fills what the touch leaves NULL.

    Each batch locks its rows in key order (``FOR NO KEY UPDATE``, which
    lets foreign keys to them through) and commits (a ``DO`` block may, run
    outside a transaction), so a writer waits for one batch at most. Only
    rows not yet filled are touched, so a killed backfill run again skips
    what it did. It raises a notice as it starts and after each batch: how many rows it walked,
    of about how many (``pg_class.reltuples``, or a count when never analyzed),
    which psql prints and a run shows as progress (``dbtools.runtime.backfill``
    reads the very words). The batch size and the pause between batches are the
    session's ``dbtools.backfill_batch`` and ``dbtools.backfill_pause``, which
    a run sets from ``MIGRATION_BACKFILL_BATCH`` and ``MIGRATION_BACKFILL_PAUSE``
    (``dbtools.runtime.locking``); 1,000 rows and no pause without them.
    """
    table, key, src = ident(keyed.table), ident(keyed.key), ident(touch)
    name = literal(keyed.table)
    return execute(
        f"DO $$ DECLARE lower {keyed.key_type}; upper {keyed.key_type}; "
        "size integer := coalesce(nullif(current_setting('dbtools.backfill_batch', true), ''), '1000'); "
        "pause float := coalesce(nullif(current_setting('dbtools.backfill_pause', true), ''), '0'); "
        "walked bigint := 0; counted bigint; "
        f"total bigint := (SELECT reltuples::bigint FROM pg_class WHERE oid = {literal(table)}::regclass); "
        f"BEGIN IF total < 0 THEN SELECT count(*) INTO total FROM {table}; END IF; "
        f"RAISE NOTICE 'backfill %: about % rows', {name}, total; "
        f"SELECT min({key}) INTO lower FROM {table}; "
        "WHILE lower IS NOT NULL LOOP "
        f"SELECT max(k), count(*) INTO upper, counted FROM (SELECT {key} AS k FROM {table} "
        f"WHERE {key} >= lower ORDER BY {key} LIMIT size) AS batch; "
        f"UPDATE {table} SET {src} = {src} WHERE {key} IN (SELECT {key} FROM {table} "
        f"WHERE {key} >= lower AND {key} <= upper AND {where} "
        f"ORDER BY {key} FOR NO KEY UPDATE); "
        "COMMIT; walked := walked + counted; "
        f"RAISE NOTICE 'backfill %: % of about % rows', {name}, walked, greatest(total, walked); "
        "PERFORM pg_sleep(pause); "
        f"SELECT min({key}) INTO lower FROM {table} WHERE {key} > upper; "
        f"END LOOP; RAISE NOTICE 'backfill %: done, % rows', {name}, walked; END $$"
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


def _swap(pair: Pair, name: str, to: str) -> list[str]:
    """A type change's shadow column takes the old column's name (or gives it back): catalog only."""
    if not pair.swaps:
        return []
    return [execute(f"ALTER TABLE {ident(pair.table)} RENAME COLUMN {ident(name)} TO {ident(to)}")]


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


def render_view(autogen_context: AutogenContext, op: ViewOp) -> list[str]:
    """A table rename on both backends as today; on PostgreSQL a view keeps the old name until contract."""
    rename = op.rename  # in the direction this operation runs
    if op.phase is Phase.EXPAND:
        view = rename.old if op.forward else rename.new  # the name the old version uses
        table = rename.new if op.forward else rename.old
        if op.forward:
            return [
                Phase.EXPAND.mark,
                *render_rename(autogen_context, rename),
                "# PostgreSQL: the old application version reads and writes the table through a view",
                "# under its old name (a simple view, so PostgreSQL updates it); the contract drops it.",
                ON_POSTGRESQL,
                execute(f"CREATE VIEW {ident(view)} AS SELECT * FROM {ident(table)}"),
                "",
            ]
        return [
            ON_POSTGRESQL,
            execute(f"DROP VIEW IF EXISTS {ident(rename.new)}"),
            "",
            *render_rename(autogen_context, rename),
        ]
    old, new = ident(rename.old), ident(rename.new)
    if op.forward:
        return [
            Phase.CONTRACT.mark,
            "# PostgreSQL: the view the old application version used goes. SQLite: nothing to do.",
            ON_POSTGRESQL,
            execute(f"DROP VIEW IF EXISTS {old}"),
            "",
        ]
    return [ON_POSTGRESQL, execute(f"CREATE VIEW {old} AS SELECT * FROM {new}"), ""]


def render_drop_later(autogen_context: AutogenContext, op: DropLaterOp) -> list[str]:
    """Expand: on PostgreSQL the column stays, insertable without it; contract: it goes. SQLite: one step."""
    drop = op.drop
    table, column = ident(drop.table_name), ident(drop.column_name)
    one_step = ops.ModifyTableOps(
        drop.table_name, [drop if op.forward else drop.reverse()], schema=drop.schema
    )
    if op.phase is Phase.EXPAND:
        if op.default is None:
            postgresql = [
                "# PostgreSQL: the column stays until the contract; inserts may leave it out already."
            ]
            postgresql.append("pass")
        elif op.forward:
            postgresql = [
                "# PostgreSQL: the column stays until the contract; the new version's inserts leave it",
                "# out, so it takes a default meanwhile (catalog only).",
                execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {op.default}"),
            ]
        else:
            postgresql = [execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT")]
        return [
            *([Phase.EXPAND.mark] if op.forward else []),
            ON_POSTGRESQL,
            *postgresql,
            "else:",
            "# SQLite: one application owns the file, so the whole change is made here, in one step.",
            *render_op(autogen_context, one_step),
            "",
        ]
    # The contract: what the one-step change did on PostgreSQL (the drop, or the column back).
    lines = (
        [Phase.CONTRACT.mark, "# PostgreSQL: the column goes. SQLite: nothing to do."] if op.forward else []
    )
    back: list[str] = []
    if not op.forward and op.default is not None:  # back in the window: the expand's default again
        back = [execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {op.default}")]
    return [*lines, ON_POSTGRESQL, *render_op(autogen_context, one_step), *back, ""]


def render_not_null(autogen_context: AutogenContext, op: NotNullOp) -> list[str]:
    """Expand: NULL writes filled, old rows backfilled, NOT NULL proven; contract: SET NOT NULL."""
    alter = op.alter
    table, column = ident(alter.table_name), ident(alter.column_name)
    check, trigger = ident(op.check), ident(op.trigger)
    fill = op.fill or "NULL"
    marker = (
        []
        if op.fill
        else [f"{FILL_MARKER} {alter.table_name}.{alter.column_name}: write the value a NULL becomes"]
    )
    function = (
        f"CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF NEW.{column} IS NULL THEN NEW.{column} := {fill}; END IF; RETURN NEW; END $$"
    )
    grow = [
        *marker,
        execute(function),
        execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}"),
        execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {trigger}()"
        ),
        execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}"),
        execute(f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID"),
    ]
    shrink = [
        execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}"),
        execute(f"DROP FUNCTION IF EXISTS {trigger}()"),
        execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}"),
    ]
    if op.phase is Phase.CONTRACT:
        if op.forward:
            return [
                Phase.CONTRACT.mark,
                "# PostgreSQL: SET NOT NULL trusts the validated CHECK (no scan); the CHECK and the",
                "# trigger that filled the old version's NULL writes go. SQLite: nothing to do.",
                ON_POSTGRESQL,
                execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL"),
                *shrink,
                "",
            ]
        return [
            ON_POSTGRESQL,
            execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL"),
            *grow,
            AUTOCOMMIT,
            execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}"),
            "",
            "",
        ]
    rest = ops.AlterColumnOp(
        alter.table_name,
        alter.column_name,
        existing_type=alter.existing_type,
        existing_server_default=alter.existing_server_default,
        existing_nullable=True,
        modify_server_default=alter.modify_server_default,
        modify_comment=alter.modify_comment,
        existing_comment=alter.existing_comment,
    )
    has_rest = alter.modify_server_default is not False or alter.modify_comment is not False
    sqlite = ops.ModifyTableOps(alter.table_name, [alter if op.forward else alter.reverse()])
    if op.forward:
        filled = [execute(f"UPDATE {table} SET {column} = {fill} WHERE {column} IS NULL")] if op.fill else []
        return [
            Phase.EXPAND.mark,
            ON_POSTGRESQL,
            "# PostgreSQL: the old version's NULL writes are filled by a trigger; the rows before,",
            "# by a backfill in batches; a validated CHECK proves NOT NULL for the contract.",
            *(render_op(autogen_context, ops.ModifyTableOps(alter.table_name, [rest])) if has_rest else []),
            *grow,
            "# Each batch its own short transaction: writers wait for one batch of rows at most.",
            AUTOCOMMIT,
            _backfill(op.keyed, touch=alter.column_name, where=f"{column} IS NULL"),
            execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}"),
            "",
            "else:",
            "# SQLite: one application owns the file, so the whole change is made here, in one step.",
            *filled,
            *render_op(autogen_context, sqlite),
            "",
        ]
    back = (
        render_op(autogen_context, ops.ModifyTableOps(alter.table_name, [rest.reverse()])) if has_rest else []
    )
    return [ON_POSTGRESQL, *shrink, *back, "else:", *render_op(autogen_context, sqlite), ""]

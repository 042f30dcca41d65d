"""Autogenerate that asks "was it renamed?", as Django's ``makemigrations`` does.

Alembic sees a renamed column as a dropped one and a new one, and a renamed
table the same way: the generated migration would lose every value in it.
Within one table, a dropped column and an added column with the same type,
nullability and default are a rename candidate; a dropped table and a new
table with the same columns (names and types) are one too. A candidate with
more than one partner is ambiguous and never guessed.

``make migration`` asks about each candidate on a terminal; without one it
writes the drop and the add, and says how to answer with ``renames=``. An
accepted rename becomes a real rename, and the indexes and constraints
named after the old name (the naming convention) are renamed with it, so
``make check`` stays clean on both backends.

Before anything is asked, a name the migration would create that PostgreSQL
would truncate (over 63 bytes) is refused: the models would keep the long
name, and ``make check`` would report it forever.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op
from alembic.operations import ops
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import Dialect

from dbtools import run, settings
from dbtools.autogenerate.pgsql import MAX_NAME_BYTES, ON_POSTGRESQL, execute, ident
from dbtools.autogenerate.portable import EnumTypeOp


@dataclass(frozen=True)
class Candidate:
    table: str | None  # the column's table; None for a table rename
    old: str
    new: str
    what: str  # the column's type, or the table's columns

    @property
    def answer(self) -> str:
        """How ``renames=`` names this rename."""
        return f"{self.table}.{self.old}={self.new}" if self.table else f"{self.old}={self.new}"

    def question(self) -> str:
        if self.table:
            return f"Was {self.table}.{self.old} renamed to {self.table}.{self.new} ({self.what})? [y/N] "
        return f"Was the table {self.old} renamed to {self.new} ({self.what})? [y/N] "


def parse(raw: str) -> tuple[str, ...]:
    """``renames="users.name=display_name accounts=users"``: comma or space separated."""
    entries = tuple(entry for entry in re.split(r"[\s,]+", raw.strip()) if entry)
    for entry in entries:
        if not re.fullmatch(r"[\w$]+(\.[\w$]+)?=[\w$]+", entry):
            raise CommandError(
                f"renames={raw!r}: {entry!r} is not table.column=new_name or table=new_name; "
                "nothing was written"
            )
    return entries


def rewrite(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """``process_revision_directives``: offer each candidate, rewrite the accepted ones."""
    decisions = run.in_context(context).rename_decisions
    if decisions is None or not directives or directives[0].upgrade_ops is None:
        return  # not make migration: `make check` and plain alembic runs only compare
    script = directives[0]
    upgrade = script.upgrade_ops
    assert upgrade is not None
    assert context.dialect is not None
    refuse_long_names(upgrade)
    candidates, ambiguous = find(upgrade.ops, context.dialect)
    by_answer = {candidate.answer: candidate for candidate in candidates}
    unknown = [answer for answer in decisions.answers if answer not in by_answer]
    if unknown:
        offered = ", ".join(by_answer) or "none"
        raise CommandError(
            f"renames= names {', '.join(unknown)}, which is not a rename candidate in this change "
            f"(candidates: {offered}); nothing was written"
        )
    accepted = []
    for candidate in candidates:
        if candidate.answer in decisions.answers or (
            decisions.ask and decisions.ask_one(candidate.question())
        ):
            accepted.append(candidate)
        elif not decisions.ask:
            print(
                f"Possible rename: {candidate.answer.replace('=', ' -> ')} ({candidate.what}), written as a "
                f"drop and an add. To rename instead: make migration msg={_shell(decisions.message)} "
                f'renames="{candidate.answer}"'
            )
    for old, new in ambiguous:
        print(
            f"Not guessed: {old} -> {new} could pair more than one way; write the rename by hand if it is one"
        )
    for candidate in accepted:
        apply(upgrade, candidate)
    if accepted:
        script.downgrade_ops = upgrade.reverse()


def refuse_long_names(upgrade: ops.UpgradeOps) -> None:
    """Refuse a name the migration would create that PostgreSQL would truncate, before anything is asked.

    PostgreSQL cuts a name longer than 63 bytes to its first 63, with only a
    NOTICE; the models keep the long one, so ``make check`` would report the
    difference forever. A project that never deploys to PostgreSQL
    (``MIGRATION_BACKENDS=sqlite``) has no such limit.
    """
    if settings.sqlite_only():
        return
    long = [
        f"{what} {name!r} ({len(name.encode())} bytes)"
        for what, name in dict.fromkeys(_created_names(upgrade.ops))
        if len(name.encode()) > MAX_NAME_BYTES
    ]
    if long:
        raise CommandError(
            f"the {', the '.join(long)}: longer than PostgreSQL's {MAX_NAME_BYTES}-byte limit for names, "
            "which it would truncate silently (make check would then report a difference forever); "
            "nothing was written. Shorten the name in the model (an index or constraint may take "
            "a name= of its own)"
        )


def _created_names(operations: Sequence[ops.MigrateOperation], table: str = "") -> Iterator[tuple[str, str]]:
    """(what, name) of each table, column, index, constraint and enum type ``operations`` create."""
    for op in operations:
        if isinstance(op, ops.ModifyTableOps):
            yield from _created_names(op.ops, op.table_name)
        elif isinstance(op, ops.CreateTableOp):
            yield "table", op.table_name
            for item in op.columns:
                if isinstance(item, sa.Column):
                    yield f"column of {op.table_name}", item.name
                elif isinstance(item, sa.Constraint) and isinstance(item.name, str):
                    yield "constraint", item.name
        elif isinstance(op, ops.AddColumnOp):
            yield f"column of {op.table_name}", op.column.name
        elif isinstance(op, ops.AlterColumnOp) and op.modify_name:
            yield f"column of {op.table_name}", op.modify_name
        elif isinstance(op, ops.CreateIndexOp) and op.index_name:
            yield "index", str(op.index_name)
        elif isinstance(op, ops.AddConstraintOp):
            name = getattr(op, "constraint_name", None)  # every subclass has one; the base declares none
            if name:
                yield "constraint", str(name)
        elif isinstance(op, EnumTypeOp) and op.create:
            yield "enum type", op.name


def _shell(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# --- finding candidates ------------------------------------------------------


def find(
    operations: Sequence[ops.MigrateOperation], dialect: Dialect
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Unambiguous candidates, and the ambiguous ones as ("old", "new1 or new2") or the other way."""
    candidates: list[Candidate] = []
    ambiguous: list[tuple[str, str]] = []
    for modify in (op for op in operations if isinstance(op, ops.ModifyTableOps)):
        drops = [op for op in modify.ops if isinstance(op, ops.DropColumnOp)]
        adds = [op for op in modify.ops if isinstance(op, ops.AddColumnOp)]
        pairs = [
            (drop.column_name, add.column.name, _type(add.column, dialect))
            for drop in drops
            for add in adds
            if _same_column(drop.to_column(), add.column, dialect)
        ]
        table = modify.table_name
        found, unclear = _unique(pairs)
        candidates += [Candidate(table, old, new, what) for old, new, what in found]
        ambiguous += [(_qualified(table, old), _qualified(table, new)) for old, new in unclear]
    drops_t = [op for op in operations if isinstance(op, ops.DropTableOp)]
    creates = [op for op in operations if isinstance(op, ops.CreateTableOp)]
    pairs = [
        (
            drop.table_name,
            create.table_name,
            "columns " + ", ".join(c.name for c in create.to_table().columns),
        )
        for drop in drops_t
        for create in creates
        if _columns(drop.to_table(), dialect) == _columns(create.to_table(), dialect)
    ]
    found, unclear = _unique(pairs)
    candidates += [Candidate(None, old, new, what) for old, new, what in found]
    return candidates, ambiguous + unclear


def _qualified(table: str, names: str) -> str:
    return " or ".join(f"{table}.{name}" for name in names.split(" or "))


def _unique(pairs: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Pairs whose both sides have no other partner; the others, as "old" and "new1 or new2"."""
    olds, news = Counter(p[0] for p in pairs), Counter(p[1] for p in pairs)
    found = [p for p in pairs if olds[p[0]] == 1 and news[p[1]] == 1]
    unclear = [(old, new) for old, new, _ in pairs if olds[old] > 1 or news[new] > 1]
    by_old: dict[str, list[str]] = {}
    for old, new in unclear:
        by_old.setdefault(old, []).append(new)
    grouped = [(old, " or ".join(targets)) for old, targets in by_old.items() if len(targets) > 1]
    by_new: dict[str, list[str]] = {}
    for old, new in unclear:
        if len(by_old[old]) == 1:
            by_new.setdefault(new, []).append(old)
    grouped += [(" or ".join(sources), new) for new, sources in by_new.items()]
    return found, grouped


def _same_column(old: sa.Column[Any], new: sa.Column[Any], dialect: Dialect) -> bool:
    return (
        _type(old, dialect) == _type(new, dialect)
        and bool(old.nullable) == bool(new.nullable)
        and _default(old, dialect) == _default(new, dialect)
    )


def _columns(table: sa.Table, dialect: Dialect) -> set[tuple[str, str]]:
    return {(column.name, _type(column, dialect)) for column in table.columns}


def _type(column: sa.Column[Any], dialect: Dialect) -> str:
    try:
        return str(column.type.compile(dialect=dialect))
    except Exception:  # a type this dialect cannot render: compare what it is
        return repr(column.type)


def _default(column: sa.Column[Any], dialect: Dialect) -> str | None:
    default = column.server_default
    if default is None:
        return None
    arg: Any = getattr(default, "arg", default)
    text = f"'{arg}'" if isinstance(arg, str) else str(arg.compile(dialect=dialect))
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return text.strip().lower()


# --- rewriting an accepted rename -----------------------------------------------


def renamed(name: str, old: str, new: str) -> str:
    """A name that follows the naming convention, after ``old`` became ``new``."""
    return re.sub(rf"(?<=_){re.escape(old)}(?=_|$)", new, name)


class Named(enum.Enum):
    """What carries a name that follows a rename: it decides how the name changes.

    PostgreSQL renames an index with ``ALTER INDEX``, any constraint with
    ``ALTER TABLE ... RENAME CONSTRAINT``; SQLite keeps constraint names only
    in its CREATE TABLE, so renaming one rebuilds the table.
    """

    INDEX = enum.auto()
    CONSTRAINT = enum.auto()


@dataclass
class NameChange:
    """One index or constraint renamed, and how SQLite does it (drop, then create)."""

    kind: Named
    old: str
    new: str
    drop: ops.MigrateOperation
    create: ops.MigrateOperation

    def reverse(self, table: str | None = None) -> NameChange:
        drop, create = self.create.reverse(), self.drop.reverse()
        if table is not None:
            for op in (drop, create):
                op.table_name = table  # type: ignore[attr-defined]
        return NameChange(self.kind, self.new, self.old, drop, create)


class RenameOp(ops.MigrateOperation):
    """A column or a table renamed, with the names that follow it."""

    def __init__(self, table: str | None, old: str, new: str, names: dict[str, list[NameChange]]) -> None:
        self.table, self.old, self.new, self.names = table, old, new, names

    def reverse(self) -> RenameOp:
        back = {}
        for table, changes in self.names.items():
            itself = self.table is None and table == self.new  # the renamed table: its name goes back too
            back[self.old if itself else table] = [
                change.reverse(self.old if itself else None) for change in changes
            ]
        return RenameOp(self.table, self.new, self.old, back)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("rename_column", self.table, self.old, self.new) if self.table else ("rename_table", self.old)


def apply(upgrade: ops.UpgradeOps, candidate: Candidate) -> None:
    """Replace the drop and the add with a rename, where the first of them was."""
    old, new = candidate.old, candidate.new
    names: dict[str, list[NameChange]] = {}
    if candidate.table is not None:
        modify = _modify(upgrade, candidate.table)
        assert modify is not None
        position = upgrade.ops.index(modify)
        modify.ops = [op for op in modify.ops if not _is_column(op, old, new)]
        names[candidate.table] = _pair_names(modify, old, new)
    else:
        drop = next(op for op in upgrade.ops if isinstance(op, ops.DropTableOp) and op.table_name == old)
        create = next(op for op in upgrade.ops if isinstance(op, ops.CreateTableOp) and op.table_name == new)
        before, after = _modify(upgrade, old), _modify(upgrade, new)
        involved = [op for op in (before, drop, create, after) if op is not None]
        position = min(upgrade.ops.index(op) for op in involved)
        upgrade.ops = [op for op in upgrade.ops if op not in involved]
        # The old table's dropped indexes and the new one's created ones, side by side.
        merged = ops.ModifyTableOps(new, [*(before.ops if before else []), *(after.ops if after else [])])
        names[new] = _table_names(drop.to_table(), create.to_table(), old, new) + _pair_names(
            merged, old, new
        )
        for modify in [op for op in upgrade.ops if isinstance(op, ops.ModifyTableOps)]:
            names.setdefault(modify.table_name, []).extend(_pair_names(modify, old, new))
        if merged.ops:
            upgrade.ops.insert(position, merged)
    upgrade.ops.insert(position, RenameOp(candidate.table, old, new, {t: c for t, c in names.items() if c}))
    upgrade.ops = [op for op in upgrade.ops if not (isinstance(op, ops.ModifyTableOps) and not op.ops)]


def _modify(upgrade: ops.UpgradeOps, table: str) -> ops.ModifyTableOps | None:
    found = (op for op in upgrade.ops if isinstance(op, ops.ModifyTableOps) and op.table_name == table)
    return next(found, None)


def _is_column(op: ops.MigrateOperation, old: str, new: str) -> bool:
    return (isinstance(op, ops.DropColumnOp) and op.column_name == old) or (
        isinstance(op, ops.AddColumnOp) and op.column.name == new
    )


def _name(op: Any) -> str:
    return str(op.index_name if isinstance(op, ops.DropIndexOp | ops.CreateIndexOp) else op.constraint_name)


def _pair_names(modify: ops.ModifyTableOps, old: str, new: str) -> list[NameChange]:
    """Drop X + create Y in one table, Y being X renamed: one name change, taken out of ``modify``."""
    drops = [op for op in modify.ops if isinstance(op, ops.DropIndexOp | ops.DropConstraintOp)]
    changes = []
    for create in [op for op in modify.ops if isinstance(op, ops.CreateIndexOp | ops.AddConstraintOp)]:
        name = _name(create)
        drop = next((d for d in drops if _name(d) != name and renamed(_name(d), old, new) == name), None)
        if drop is None:
            continue
        kind = Named.INDEX if isinstance(create, ops.CreateIndexOp) else Named.CONSTRAINT
        changes.append(NameChange(kind, _name(drop), name, drop, create))
        modify.ops = [op for op in modify.ops if op is not drop and op is not create]
    return changes


def _table_names(before: sa.Table, after: sa.Table, old: str, new: str) -> list[NameChange]:
    """The renamed table's own constraints, matched by name through the rename.

    In name order: ``Table.constraints`` is a set, and a migration written twice must read the same.
    """
    existing = {str(c.name): c for c in before.constraints if c.name}
    changes = []
    for constraint in sorted(after.constraints, key=lambda c: str(c.name or "")):
        if not constraint.name:
            continue
        name = str(constraint.name)
        previous = next((c for n, c in existing.items() if renamed(n, old, new) == name and n != name), None)
        if previous is None:
            continue
        drop = ops.DropConstraintOp.from_constraint(previous)
        drop.table_name = new
        create = ops.AddConstraintOp.from_constraint(constraint)
        changes.append(NameChange(Named.CONSTRAINT, str(previous.name), name, drop, create))
    return changes


# --- rendering -------------------------------------------------------------


def render_rename(autogen_context: AutogenContext, op: RenameOp) -> list[str]:
    """The rename, then the names that follow it: renamed on PostgreSQL, dropped and created on SQLite."""
    # Mako's PythonPrinter indents these lines itself (see autogenerate.pgsql): none carries its own.
    if op.table is not None:
        lines = [f"op.alter_column({op.table!r}, {op.old!r}, new_column_name={op.new!r})", ""]
    else:
        lines = [f"op.rename_table({op.old!r}, {op.new!r})", ""]
    for table, changes in op.names.items():
        lines += _render_names(autogen_context, table, changes)
    return lines


def _render_names(autogen_context: AutogenContext, table: str, changes: list[NameChange]) -> list[str]:
    lines = ["# Names that follow the naming convention follow the rename.", ON_POSTGRESQL]
    for change in changes:
        if change.kind is Named.INDEX:
            sql = f"ALTER INDEX {ident(change.old)} RENAME TO {ident(change.new)}"
        else:
            sql = f"ALTER TABLE {ident(table)} RENAME CONSTRAINT {ident(change.old)} TO {ident(change.new)}"
        lines.append(execute(sql))
    lines.append("else:")
    if any(change.kind is Named.CONSTRAINT for change in changes):
        lines.append("# SQLite keeps constraint names in its CREATE TABLE only: this rebuilds the table.")
    sqlite = ops.ModifyTableOps(
        table, [change.drop for change in changes] + [change.create for change in changes]
    )
    return [*lines, *render_op(autogen_context, sqlite), ""]  # the batch block closes itself; "" closes else


def render_create_primary_key(autogen_context: AutogenContext, op: ops.CreatePrimaryKeyOp) -> str:
    """A renamed table's primary key, recreated under its new name in SQLite's batch.

    Alembic's own renderer raises ``NotImplementedError``, as autogenerate never
    adds a primary key; ``dbtools.autogenerate.render`` puts this one in its place.
    """
    columns = [str(column) for column in op.columns]
    if autogen_context._has_batch:
        return f"batch_op.create_primary_key({str(op.constraint_name)!r}, {columns!r})"
    return f"op.create_primary_key({str(op.constraint_name)!r}, {op.table_name!r}, {columns!r})"

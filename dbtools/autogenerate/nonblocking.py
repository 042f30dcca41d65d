"""Autogenerate that writes each change in its online form on PostgreSQL, and plainly on SQLite.

Alembic renders the blocking form of every change: an index built under a
SHARE lock (writes wait for the whole build), a foreign key or CHECK
validated under a lock that blocks writes, a unique constraint built under
ACCESS EXCLUSIVE, NOT NULL checked by a full scan under ACCESS EXCLUSIVE.
Here, a change to a table that already exists gets a PostgreSQL branch with
the form django-pg-zero-downtime-migrations and strong_migrations recommend,
and SQLite keeps its batch operations in the ``else:`` branch:

- index: ``CREATE INDEX CONCURRENTLY`` in an ``autocommit_block()``, after
  dropping any index of that name a killed build left INVALID; dropping one:
  ``DROP INDEX CONCURRENTLY``;
- foreign key, CHECK: ``ADD CONSTRAINT ... NOT VALID`` (a moment's lock),
  then ``VALIDATE CONSTRAINT`` in a transaction of its own, which lets writes
  through;
- unique constraint: a unique index built concurrently, then ``ADD
  CONSTRAINT ... UNIQUE USING INDEX``;
- NOT NULL: ``CHECK (col IS NOT NULL) NOT VALID``, ``VALIDATE``, then ``SET
  NOT NULL``, which trusts the valid check instead of scanning (PostgreSQL
  12+), and the check is dropped;
- a type change PostgreSQL does by rewriting the table stays as it is, with
  the expand/contract recipe above it; ``make lint`` asks to acknowledge it.

Each online form is one small function below, registered for its operation
type with ``@online_form``. Tables created in the same migration are new and
empty: nothing to protect.
``dbtools.runtime.locking`` keeps the migration lock and the lock timeout through the
COMMITs these blocks make.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op
from alembic.operations import ops
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy.schema import AddConstraint

from dbtools import run
from dbtools.autogenerate.pgsql import AUTOCOMMIT, DIALECT, ON_POSTGRESQL, execute, ident

REWRITE_RECIPE = (
    "# PostgreSQL rewrites the whole table for this type change, under ACCESS EXCLUSIVE:",
    "# reads and writes wait until it is done. Fine for a small table. For a big one, expand",
    "# and contract instead: add a column of the new type, backfill it in batches, switch the",
    "# application to it, then drop the old column. `make lint` asks you to acknowledge it:",
    '# acknowledge_locking = {"changing-column-type": "<why this lock is acceptable>"}',
)
TEXT_TYPES = ("VARCHAR", "TEXT", "CHARACTER VARYING")


class Form(enum.Enum):
    """How one change to a table that already exists is written for PostgreSQL."""

    ONLINE = enum.auto()  # in its online form, which lets writes through
    REWRITE = enum.auto()  # as Alembic writes it, under REWRITE_RECIPE: the table is rewritten
    PLAIN = enum.auto()  # as Alembic writes it: nothing blocks for long


class OnlineOp(ops.ModifyTableOps):
    """A table's changes: on PostgreSQL each in its online form, on SQLite Alembic's one batch.

    A ``ModifyTableOps`` still, so ``make check`` lists its changes as before.
    SQLite keeps the single batch Alembic wrote (one table rebuild, not one per
    change); PostgreSQL runs the plain changes, then each online form, in order.
    """


class RewriteOp(ops.ModifyTableOps):
    """A table's changes that include a type change PostgreSQL makes by rewriting the table."""


def rewrite(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """``process_revision_directives``: both directions, each on its own (the downgrade keeps its fixes)."""
    if not run.in_context(context).renders_online:
        return  # the benchmark's baseline: Alembic's own rendering
    for script in directives:
        for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
            # Tables created or dropped here: new and empty, or about to go.
            whole = {
                op.table_name for op in container.ops if isinstance(op, ops.CreateTableOp | ops.DropTableOp)
            }
            container.ops = [_wrap(op, whole) for op in container.ops]


def _wrap(op: ops.MigrateOperation, whole: set[str]) -> ops.MigrateOperation:
    if not isinstance(op, ops.ModifyTableOps) or op.table_name in whole:
        return op
    forms = {_form(inner) for inner in op.ops}
    if Form.ONLINE in forms:
        return OnlineOp(op.table_name, op.ops, schema=op.schema)
    if Form.REWRITE in forms:
        return RewriteOp(op.table_name, op.ops, schema=op.schema)
    return op


def _form(op: ops.MigrateOperation) -> Form:
    """Online iff an online form is registered for it (below); a type change may rewrite instead."""
    if _registered(op) is not None:
        return Form.ONLINE
    if (
        isinstance(op, ops.AlterColumnOp)
        and op.modify_type is not None
        and rewrites(op.existing_type, op.modify_type)
    ):
        return Form.REWRITE
    return Form.PLAIN


def rewrites(old: Any, new: Any) -> bool:
    """Whether PostgreSQL rewrites the table; widening a varchar, or varchar to text, does not."""
    try:
        before, after = (str(sa.types.to_instance(t).compile(dialect=DIALECT)).upper() for t in (old, new))
    except Exception:  # a type PostgreSQL cannot render here: assume the worst
        return True
    if before == after:
        return False
    if after == "TEXT" and before.startswith(TEXT_TYPES):
        return False
    old_length, new_length = getattr(old, "length", None), getattr(new, "length", None)
    both_varchar = before.startswith("VARCHAR") and after.startswith("VARCHAR")
    return not (
        both_varchar and (new_length is None or (old_length is not None and new_length >= old_length))
    )


# --- the online forms, one per operation type ------------------------------


# An online form: (autogen context, table, the operation) -> the comment a
# reviewer reads first, and the lines that do the change without blocking.
Writer = Callable[[AutogenContext, str, Any], tuple[str, list[str]]]
_W = TypeVar("_W", bound=Writer)


@dataclass(frozen=True)
class OnlineForm:
    """How one type of operation is written online, and to which operations of that type it applies."""

    write: Writer
    applies: Callable[[Any], bool]


ONLINE_FORMS: dict[type[ops.MigrateOperation], OnlineForm] = {}


def _always(op: ops.MigrateOperation) -> bool:
    return True


def online_form(
    *types: type[ops.MigrateOperation], when: Callable[[Any], bool] = _always
) -> Callable[[_W], _W]:
    """Register the decorated function as the online form of ``types`` (those ``when`` accepts).

    One small function per operation type, looked up by the operation's type
    as Alembic's ``renderers.dispatch_for`` looks up a renderer (and as
    strong_migrations has a ``check_<operation>`` per operation). A new
    online form is one more function here; an operation without one stays as
    Alembic writes it. The table is this module's own, read by ``_form`` and
    ``render_online``: not one of Alembic's process-wide registries, which
    ``dbtools.autogenerate.render`` holds.
    """

    def register(write: _W) -> _W:
        for type_ in types:
            ONLINE_FORMS[type_] = OnlineForm(write, when)
        return write

    return register


def _registered(op: ops.MigrateOperation) -> OnlineForm | None:
    """The online form registered for ``op``'s type (or a base class, as ``isinstance``), if it applies."""
    found = next((ONLINE_FORMS[cls] for cls in type(op).__mro__ if cls in ONLINE_FORMS), None)
    return found if found is not None and found.applies(op) else None


@online_form(ops.CreateIndexOp)
def _create_index(
    autogen_context: AutogenContext, table: str, op: ops.CreateIndexOp
) -> tuple[str, list[str]]:
    """A plain CREATE INDEX holds a SHARE lock for the whole build: every write waits."""
    build = _build_index(autogen_context, op.index_name, table, op.columns, op.unique, op.kw)
    return "# PostgreSQL: built without blocking writes (CONCURRENTLY, outside the transaction)", [
        AUTOCOMMIT,
        *build,
        "",
    ]


@online_form(ops.DropIndexOp)
def _drop_index(autogen_context: AutogenContext, table: str, op: ops.DropIndexOp) -> tuple[str, list[str]]:
    """A plain DROP INDEX takes ACCESS EXCLUSIVE on the table: reads wait too."""
    drop = ops.DropIndexOp(op.index_name, table_name=table, if_exists=True, postgresql_concurrently=True)
    return "# PostgreSQL: dropped without blocking reads or writes (CONCURRENTLY)", [
        AUTOCOMMIT,
        *render_op(autogen_context, drop),
        "",
    ]


@online_form(ops.CreateUniqueConstraintOp)
def _create_unique(
    autogen_context: AutogenContext, table: str, op: ops.CreateUniqueConstraintOp
) -> tuple[str, list[str]]:
    """ADD CONSTRAINT UNIQUE builds its index under ACCESS EXCLUSIVE; one built concurrently is adopted."""
    name = str(op.constraint_name)
    return "# PostgreSQL: a unique index built without blocking writes, then made the constraint", [
        AUTOCOMMIT,
        *_build_index(autogen_context, name, table, list(op.columns), True, {}),
        "",
        execute(f"ALTER TABLE {ident(table)} ADD CONSTRAINT {ident(name)} UNIQUE USING INDEX {ident(name)}"),
    ]


@online_form(ops.CreateForeignKeyOp, ops.CreateCheckConstraintOp)
def _add_not_valid(
    autogen_context: AutogenContext, table: str, op: ops.CreateForeignKeyOp | ops.CreateCheckConstraintOp
) -> tuple[str, list[str]]:
    """Adding a foreign key or CHECK checks every row under a lock that blocks writes; VALIDATE does not."""
    name = str(op.constraint_name)
    added = str(AddConstraint(op.to_constraint()).compile(dialect=DIALECT))
    return "# PostgreSQL: added NOT VALID (a moment's lock), validated while writes go on", [
        execute(f"{' '.join(added.split())} NOT VALID"),
        AUTOCOMMIT,
        execute(f"ALTER TABLE {ident(table)} VALIDATE CONSTRAINT {ident(name)}"),
        "",
    ]


def _sets_not_null(op: ops.AlterColumnOp) -> bool:
    """NOT NULL added to a column that keeps its type and name (a type change rewrites the table anyway)."""
    return (
        op.modify_nullable is False
        and op.existing_nullable is not False
        and op.modify_type is None
        and op.modify_name is None
    )


@online_form(ops.AlterColumnOp, when=_sets_not_null)
def _set_not_null(
    autogen_context: AutogenContext, table: str, op: ops.AlterColumnOp
) -> tuple[str, list[str]]:
    """SET NOT NULL scans the table under ACCESS EXCLUSIVE; since PostgreSQL 12, a valid CHECK spares that."""
    check = ident(f"ck_{table}_{op.column_name}_not_null")
    others, default = _alter_the_rest(autogen_context, table, op)
    alter = ops.AlterColumnOp(
        table,
        op.column_name,
        existing_type=op.existing_type,
        existing_server_default=default,
        existing_nullable=op.existing_nullable,
        modify_nullable=False,
    )
    return "# PostgreSQL: NOT NULL proven by a validated CHECK, so SET NOT NULL need not scan", [
        *others,
        execute(f"ALTER TABLE {ident(table)} DROP CONSTRAINT IF EXISTS {check}"),
        execute(
            f"ALTER TABLE {ident(table)} ADD CONSTRAINT {check} "
            f"CHECK ({ident(op.column_name)} IS NOT NULL) NOT VALID"
        ),
        AUTOCOMMIT,
        execute(f"ALTER TABLE {ident(table)} VALIDATE CONSTRAINT {check}"),
        "",
        *render_op(autogen_context, alter),
        execute(f"ALTER TABLE {ident(table)} DROP CONSTRAINT {check}"),
    ]


def _alter_the_rest(
    autogen_context: AutogenContext, table: str, op: ops.AlterColumnOp
) -> tuple[list[str], Any]:
    """The rest of a NOT NULL change first (a default, a comment: catalog only), and the default after it."""
    if op.modify_server_default is False and op.modify_comment is False:
        return [], op.existing_server_default
    rest = ops.AlterColumnOp(
        table,
        op.column_name,
        existing_type=op.existing_type,
        existing_server_default=op.existing_server_default,
        existing_nullable=op.existing_nullable,
        modify_server_default=op.modify_server_default,
        modify_comment=op.modify_comment,
        existing_comment=op.existing_comment,
    )
    default = op.existing_server_default if op.modify_server_default is False else op.modify_server_default
    return render_op(autogen_context, rest), default


def _build_index(
    autogen_context: AutogenContext, name: Any, table: str, columns: Any, unique: bool, kw: dict[str, Any]
) -> list[str]:
    """Drop an INVALID leftover of a killed build, then build; a re-run completes either way."""
    drop = ops.DropIndexOp(name, table_name=table, if_exists=True, postgresql_concurrently=True)
    create = ops.CreateIndexOp(
        name, table, columns, unique=unique, if_not_exists=True, **{**kw, "postgresql_concurrently": True}
    )
    return [*render_op(autogen_context, drop), *render_op(autogen_context, create)]


# --- rendering -------------------------------------------------------------


# Alembic writes these lines through Mako's PythonPrinter, which indents by
# itself: a line ending in ":" opens a block, an empty line closes one, and
# "else:" dedents. So no line here carries its own indentation.


def render_online(autogen_context: AutogenContext, op: OnlineOp) -> list[str]:
    """The PostgreSQL branch (plain changes, then each online form, in order), then SQLite's batch."""
    lines = list(REWRITE_RECIPE) if any(_form(inner) is Form.REWRITE for inner in op.ops) else []
    lines.append(ON_POSTGRESQL)
    plain: list[ops.MigrateOperation] = []
    for inner in uniqueness_dropped_last(op.ops):
        online = _registered(inner)
        if online is None:
            plain.append(inner)
            continue
        if plain:
            lines += render_op(autogen_context, ops.ModifyTableOps(op.table_name, plain, schema=op.schema))
            plain = []
        comment, body = online.write(autogen_context, op.table_name, inner)
        lines += [comment, *body]
    if plain:
        lines += render_op(autogen_context, ops.ModifyTableOps(op.table_name, plain, schema=op.schema))
    sqlite = render_op(autogen_context, ops.ModifyTableOps(op.table_name, op.ops, schema=op.schema))
    return [*lines, "else:", *sqlite, ""]


def uniqueness_dropped_last(operations: list[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
    """PostgreSQL's order: a unique constraint or index dropped only after every change that builds one.

    A unique constraint replaced by another (``unique=True`` swapped for a
    composite ``UniqueConstraint``) is then built concurrently and validated
    (adopted as the constraint) before the old one goes, in the transaction
    the version bump commits: uniqueness holds at every moment, and a run that
    failed during the build left the old constraint in place for the next
    ``make upgrade``. One dropped to make way for another of the same name
    stays first. SQLite's batch does it all in one rebuild.
    """
    created = {_name(op) for op in operations if isinstance(op, ops.AddConstraintOp | ops.CreateIndexOp)}
    builds = any(_builds_uniqueness(op) for op in operations)
    # A dropped column takes its constraints along: a drop left for later would find nothing.
    if not builds or any(isinstance(op, ops.DropColumnOp) for op in operations):
        return operations
    last = [op for op in operations if _drops_uniqueness(op) and _name(op) not in created]
    return [op for op in operations if op not in last] + last


def _builds_uniqueness(op: ops.MigrateOperation) -> bool:
    return isinstance(op, ops.CreateUniqueConstraintOp) or (
        isinstance(op, ops.CreateIndexOp) and bool(op.unique)
    )


def _drops_uniqueness(op: ops.MigrateOperation) -> bool:
    if isinstance(op, ops.DropConstraintOp):
        return op.constraint_type == "unique"
    if isinstance(op, ops.DropIndexOp):
        created = getattr(op, "_reverse", None)  # the index as it was, when Alembic compared
        return isinstance(created, ops.CreateIndexOp) and bool(created.unique)
    return False


def _name(op: ops.MigrateOperation) -> str:
    return str(getattr(op, "constraint_name", None) or getattr(op, "index_name", None))


def render_rewrite(autogen_context: AutogenContext, op: RewriteOp) -> list[str]:
    """Alembic's batch, under the expand/contract recipe a reviewer reads first."""
    batch = render_op(autogen_context, ops.ModifyTableOps(op.table_name, op.ops, schema=op.schema))
    return [*REWRITE_RECIPE, *batch]

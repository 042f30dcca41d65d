"""How autogenerate compares the models with a database and writes scripts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy.schema import Column, DefaultClause
from sqlalchemy.sql.elements import False_, True_
from sqlalchemy.types import TypeEngine

# Importing render registers the project's renderers and comparator plugin in Alembic, once.
from dbtools.autogenerate import indexes, nonblocking, phases, portable, renames, render
from dbtools.paths import CHECKSUM_TABLE, PROGRESS_TABLE, VERSION_TABLE


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render what a migration needs on both backends, as plain SQLAlchemy.

    A migration must keep working after the models change, so it never
    imports application code: application types render as their base type.
    A boolean default renders as ``sa.true()`` rather than as the compared
    database's ``1``. An enum never creates or drops its PostgreSQL type on
    its own: ``dbtools.autogenerate.portable`` writes those steps where they belong.
    """
    from models import UTCDateTime  # only autogenerate renders, so only it loads the models

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, sa.Enum) and obj.native_enum and obj.name:
        values = ", ".join(repr(value) for value in obj.enums)
        return f"sa.Enum({values}, name={obj.name!r}, create_type=False)"
    if type_ == "server_default" and isinstance(obj, DefaultClause) and isinstance(obj.arg, True_ | False_):
        return "sa.true()" if isinstance(obj.arg, True_) else "sa.false()"
    return False


def compare_type(
    context: MigrationContext,
    inspected: Column[Any],
    metadata: Column[Any],
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    """SQLite's rowid key is declared INTEGER at every width: no drift (``dbtools.autogenerate.portable``)."""
    if (
        context.dialect.name == "sqlite"
        and metadata.primary_key
        and isinstance(metadata_type, sa.Integer)
        and str(inspected_type).upper() == "INTEGER"
    ):
        return False
    return None  # Alembic's own comparison


def compare_server_default(
    context: MigrationContext,
    inspected: Column[Any],
    metadata: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """An empty-string default is what SQLite reports as ``('')`` (Alembic saw a change forever)."""
    reported = re.sub(r"^\((.*)\)$", r"\1", inspected_default or "").split("::")[0]
    if rendered_metadata_default == "" and reported == "''":
        return False
    return None  # Alembic's own comparison


def write_or_skip(
    context: MigrationContext,
    revision: str | Iterable[str | None] | Iterable[str],
    directives: list[MigrationScript],
) -> None:
    """``make migration``: no file without changes, and a note when PostgreSQL's facts were unseen."""
    portable.warn_if_blind(context)
    skip_empty_revision(context, revision, directives)


def skip_empty_revision(
    context: MigrationContext,
    revision: str | Iterable[str | None] | Iterable[str],
    directives: list[MigrationScript],
) -> None:
    """Write no file when the models did not change (Alembic cookbook recipe).

    ``make migration`` passes this to ``command.revision``; ``alembic check``
    must keep its (empty) script to report on, so env.py does not install it.
    """
    script = directives[0]
    if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []
        print("No changes detected; no migration written.")


def rewrite(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """Renames first (they replace operations), then the fixes for both backends, then online forms.

    Last, a rename is split into expand and contract revisions: the others
    have written the rest of the change into the first.
    """
    renames.rewrite(context, revision, directives)
    portable.rewrite(context, revision, directives)
    indexes.rewrite(context, revision, directives)
    nonblocking.rewrite(context, revision, directives)
    phases.split(context, revision, directives)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """The checksum and progress tables are bookkeeping beside alembic_version, not part of the models.

    alembic_version too: Alembic skips it only in ``version_table_schema``, and
    a tenant's run (MIGRATION_SCHEMA) compares its default schema, which Alembic calls None.
    """
    return not (type_ == "table" and name in (VERSION_TABLE, CHECKSUM_TABLE, PROGRESS_TABLE))


COMPARE_OPTIONS: dict[str, Any] = {
    "compare_type": compare_type,
    "compare_server_default": compare_server_default,
    # Alembic's comparators, CHECK constraints by name (every name here comes
    # from the naming convention), the PostgreSQL facts SQLite lacks, and what
    # Alembic does not compare about indexes.
    "autogenerate_plugins": [
        "alembic.autogenerate.*",
        "alembic.ext.checkconstraint_byname",
        render.PLUGIN,
        render.INDEX_PLUGIN,
    ],
    "render_item": render_item,
    "include_name": include_name,
    "process_revision_directives": rewrite,  # after the command's own hook
}

"""Refusals checked before anything is changed, most of them under the migration lock.

Each turns a situation Alembic would mishandle (a stack trace, a half-applied
history, or a migration written against a stale database) into a refusal that
says what to run instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, inspect


def check_database(
    migration_context: MigrationContext,
    script: ScriptDirectory,
    current: Collection[str],
    models: Callable[[], MetaData],
    *,
    adopting: bool,
) -> None:
    """Refuse a database at a revision no file defines, or one with tables but no history.

    ``current``: the database's revisions, read under the migration lock.
    """
    known = {rev.revision for rev in script.walk_revisions()}
    for rev in current:
        if rev not in known:
            raise CommandError(
                f"the database is at revision {rev!r}, which no file in migrations/versions "
                "defines; nothing was changed. Restore that migration file (e.g. from git), "
                "or point DATABASE_URL at the right database"
            )
    if current or adopting:
        return
    existing = sorted(set(inspect(migration_context.connection).get_table_names()) & set(models().tables))
    if existing:
        raise CommandError(
            f"the database already has table(s) {', '.join(existing)} but no migration history; "
            "nothing was changed. If its schema matches the models, adopt it with `make stamp`"
        )


def check_autogenerate_base(migration_context: MigrationContext, script: ScriptDirectory) -> None:
    """A new migration must start from the one head the database is at."""
    heads = script.get_heads()
    if len(heads) > 1:
        raise CommandError(
            f"the migration history has {len(heads)} heads ({', '.join(sorted(heads))}); "
            "join them first: `make rebase` puts your branch's migrations after the other's, "
            "then make upgrade"
        )
    current = migration_context.get_current_heads()
    if set(current) != set(heads):
        at = ", ".join(current) or "no revision (empty)"
        from dbtools.runtime import phases  # autogenerate only: a plain run does not import it

        if current and not phases.upgrade_steps(script, heads[0], current, phases.Phase.EXPAND):
            # Only contracts are pending: `make upgrade` now would break the old application version.
            raise CommandError(
                f"the database is between expand and contract (at {at}, its contract pending), and the "
                "models describe the shape after the contract; nothing was compared. Compare a "
                "development database at head, or this one once the last instance of the old "
                "application version is gone and `make upgrade` has run the contract"
            )
        raise CommandError(
            f"the database is at {at} but the newest migration is {', '.join(heads)}; "
            "run `make upgrade` first, so the comparison starts from the latest schema"
        )

"""Checks that run under the migration lock, before anything is changed.

Each turns a situation Alembic would mishandle (a stack trace, a half-applied
history, or a migration written against a stale database) into a refusal that
says what to run instead.
"""

from __future__ import annotations

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, inspect


def check_database(
    migration_context: MigrationContext, script: ScriptDirectory, metadata: MetaData, *, adopting: bool
) -> None:
    current = migration_context.get_current_heads()
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
    existing = sorted(set(inspect(migration_context.connection).get_table_names()) & set(metadata.tables))
    if existing:
        raise CommandError(
            f"the database already has table(s) {', '.join(existing)} but no migration history; "
            "nothing was changed. If its schema matches the models, adopt it with `make stamp`"
        )


def check_autogenerate_base(
    config: Config, migration_context: MigrationContext, script: ScriptDirectory
) -> None:
    """A new migration must start from the one head the database is at."""
    if not _autogenerating(config):
        return
    heads = script.get_heads()
    if len(heads) > 1:
        raise CommandError(
            f"the migration history has {len(heads)} heads ({', '.join(sorted(heads))}); "
            'merge them first: alembic merge heads -m "merge", then make upgrade'
        )
    current = migration_context.get_current_heads()
    if set(current) != set(heads):
        at = ", ".join(current) or "no revision (empty)"
        raise CommandError(
            f"the database is at {at} but the newest migration is {', '.join(heads)}; "
            "run `make upgrade` first, so the comparison starts from the latest schema"
        )


def _autogenerating(config: Config) -> bool:
    """Whether this run compares models with the database (revision --autogenerate, check)."""
    cmd_opts = config.cmd_opts
    command = getattr(cmd_opts, "cmd", None)
    name = getattr(command[0], "__name__", "") if command else ""
    return name == "check" or (name == "revision" and bool(getattr(cmd_opts, "autogenerate", False)))

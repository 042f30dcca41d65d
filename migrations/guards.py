"""Refusals checked before anything is changed, most of them under the migration lock.

Each turns a situation Alembic would mishandle (a stack trace, a half-applied
history, or a migration written against a stale database) into a refusal that
says what to run instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, inspect


def check_database(
    migration_context: MigrationContext,
    script: ScriptDirectory,
    models: Callable[[], MetaData],
    *,
    adopting: bool,
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
    existing = sorted(set(inspect(migration_context.connection).get_table_names()) & set(models().tables))
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


def check_file_exists(config: Config, path: Path) -> None:
    """Only commands that migrate may create a SQLite file; the others only look."""
    if _command_name(config) in ("current", "check", "revision") and not path.exists():
        raise CommandError(f"{path} does not exist yet; run `make upgrade` to create it")


def only_migrates(config: Config) -> bool:
    """An `alembic upgrade` or `downgrade` from the CLI: the models are not compared."""
    return _command_name(config) in ("upgrade", "downgrade")


def runs_migrations(config: Config) -> bool:
    """Whether this run may apply or revert migrations, so the applied history must be intact.

    Python callers (pytest-alembic) count too; `make stamp` adopts a database
    with no history, and autogenerate and `current` only look.
    """
    if config.attributes.get("adopting"):
        return False
    return _command_name(config) in ("upgrade", "downgrade", "")


def _autogenerating(config: Config) -> bool:
    """Whether this run compares models with the database (revision --autogenerate, check)."""
    name = _command_name(config)
    return name == "check" or (name == "revision" and bool(getattr(config.cmd_opts, "autogenerate", False)))


def _command_name(config: Config) -> str:
    """The alembic CLI command running, e.g. "upgrade"; "" when called from Python."""
    command = getattr(config.cmd_opts, "cmd", None)
    return str(getattr(command[0], "__name__", "")) if command else ""

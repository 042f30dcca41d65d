"""Alembic's migration environment: every upgrade, downgrade and autogenerate runs this.

Online, a run is one transaction on every backend, taken with the migration
lock held before the current revision is read. So a run is all-or-nothing,
and concurrent runs queue instead of colliding. The helpers live beside this
file, one job per module.
"""

from collections.abc import Collection, Mapping
from contextlib import nullcontext
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from migrations import autogen, backup, guards, integrity, locking
from migrations.database import build_engine, check_sqlite_file, resolve_url, sqlite_path
from migrations.errors import friendly_errors
from migrations.timing import StepTimer

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def load_models() -> MetaData:
    from models import Base

    return Base.metadata


# The models are the source of truth for autogenerate and `alembic check`. Loading
# them loads the ORM, a sixth of a no-op `make upgrade` (bench/), so upgrade and
# downgrade from the CLI load them only if a guard needs them.
target_metadata = None if guards.only_migrates(config) else load_models()

PROJECT_ROOT = Path(__file__).resolve().parent.parent
url = resolve_url(config.get_main_option("sqlalchemy.url"), PROJECT_ROOT)


def run_migrations_offline() -> None:
    """Print the SQL (``--sql``) without connecting to a database."""
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transactional_ddl=True,
        **autogen.COMPARE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    integrity.check_history(context.script)  # A missing file fails here, not as a KeyError.
    # pytest-alembic passes an Engine (or one wrapping a connection), `make stamp`
    # a Connection in its own transaction.
    given = config.attributes.get("connection")
    if given is None:
        path = sqlite_path(url)
        if path is not None:
            guards.check_file_exists(config, path)
            check_sqlite_file(path)
        given = build_engine(url)

    # `make rehearse` reads the timings and rolls the run back.
    timer = config.attributes.setdefault("timer", StepTimer())

    def after_each_step(
        ctx: MigrationContext, step: MigrationInfo, heads: Collection[str], run_args: Mapping[str, Any]
    ) -> None:
        integrity.on_version_apply(ctx, step, heads, run_args)  # in the step's transaction
        timer.on_version_apply(ctx, step, heads, run_args)

    # Entered in order, so connection failures are translated too.
    with (
        friendly_errors(url),
        nullcontext(given) if isinstance(given, Connection) else given.connect() as connection,
    ):
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite can ALTER little; batch mode rebuilds the table.
            transactional_ddl=True,  # True on SQLite too: the engine really begins a transaction.
            process_revision_directives=autogen.skip_empty_revision,
            on_version_apply=after_each_step,
            **autogen.COMPARE_OPTIONS,
        )
        with context.begin_transaction():
            locking.acquire(connection)
            migration_context = context.get_context()
            guards.check_database(
                migration_context,
                context.script,
                lambda: target_metadata or load_models(),
                adopting=bool(config.attributes.get("adopting")),
            )
            guards.check_autogenerate_base(config, migration_context, context.script)
            if guards.runs_migrations(config):
                integrity.verify(connection, context.script, migration_context.get_current_heads())
                if not config.attributes.get("rehearsing"):
                    backup.before_change(connection, migration_context)  # SQLite files only
            timer.start()
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

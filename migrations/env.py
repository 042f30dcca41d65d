"""Alembic's migration environment: every upgrade, downgrade and autogenerate runs this.

Online, a run is one transaction on every backend, begun with the migration
lock held since before the current revision is read. So a run is
all-or-nothing (except what a migration commits itself in an
``autocommit_block()``), and concurrent runs queue instead of colliding. On
PostgreSQL a run that hit a table-lock timeout is rolled back and run again.
What differs between runs (a connection handed in, adopting, rehearsing) is
decided by whoever starts the run (``dbtools.run``); the helpers live in the
``dbtools`` package.
"""

from collections.abc import Collection, Mapping
from contextlib import nullcontext
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy.engine import Connection

from dbtools import paths, run, settings, target
from dbtools.errors import friendly_errors
from dbtools.runtime import (
    backup,
    bytecode,
    checksums,
    locking,
    outoforder,
    rebuilds,
    refusals,
    resume,
    squashes,
)
from dbtools.runtime.options import context_options, load_models
from dbtools.target import Backend

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

this_run = run.of(config)
database = this_run.target or target.resolve(config)  # resolved once: every helper reads its fields
settings.check_all()  # a malformed MIGRATION_* variable fails before anything is opened
bytecode.drop_racy()  # a model or migration file edited within the second its .pyc was written
rebuilds.install()  # SQLite's table rebuilds leave generated columns to SQLite


# The models are the source of truth when Alembic compares them with the database:
# `revision --autogenerate` and `check` (make migration, make check), which hand env.py
# a revision context. Loading them and the comparators costs a third of a no-op run
# (bench/), so any other run loads the models only if its starter asks (dbtools.run),
# a guard needs them, or an operation names a constraint by the naming convention
# (dbtools.runtime.options); the comparators, never.
environment = getattr(context, "_proxy", None)  # the EnvironmentContext running this file
compares = this_run.autogenerates or "revision_context" in getattr(environment, "context_opts", {})
target_metadata = load_models() if compares or this_run.needs_models else None


def schema_options() -> dict[str, Any]:
    """A tenant schema (MIGRATION_SCHEMA) holds its own alembic_version; its search_path does the rest."""
    return {"version_table_schema": database.schema} if database.schema else {}


def compare_options() -> dict[str, Any]:
    """How autogenerate compares and writes (dbtools.autogenerate.hooks), for the runs that compare."""
    if not compares:
        return {}
    from dbtools.autogenerate import hooks

    return hooks.COMPARE_OPTIONS


def run_migrations_offline() -> None:
    """Print the SQL (``--sql``) without connecting to a database."""
    context.configure(
        url=database.url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(target_metadata),  # the same as every run: naming convention included
        **compare_options(),
        **schema_options(),
    )
    if database.schema:  # as online: the tenant's schema, created when missing, is the only one searched
        quoted = settings.quoted_schema(database.schema)
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        context.execute(f"SET search_path TO {quoted}")
    # SQL applied by hand keeps a run's guarantees: the migration lock and its timeouts,
    # and, under the lock, a check that the database is where the script starts.
    postgresql = database.backend is Backend.POSTGRESQL
    script = context.get_context()  # offline, its current heads are the start of rev=<start>:<end>
    for statement in (
        locking.offline_prelude(script.get_current_heads(), script.version_table, script.version_table_schema)
        if postgresql
        else []
    ):
        context.execute(statement)
    locking.offline_blocks(script)  # no statement timeout inside autocommit_block(), as online
    with context.begin_transaction():
        context.run_migrations()
    for statement in locking.offline_epilogue(database.schema) if postgresql else []:
        context.execute(statement)


def run_migrations_online() -> None:
    checksums.check_history(context.script)  # A missing file fails here, not as a KeyError.
    given = this_run.connection
    if given is None:
        writes = this_run.applies_migrations  # the others only look: a read-only file will do
        # Plain `alembic current` or `alembic check` only look: they refuse a missing file too.
        creates = this_run.creates_database and run.moves_the_database(context.get_revision_argument)
        database.check_before_opening(may_create=creates, writes=writes)
        given = database.engine(writes=writes, creates_schema=creates)  # as a missing SQLite file

    def after_each_step(
        ctx: MigrationContext, step: MigrationInfo, heads: Collection[str], run_args: Mapping[str, Any]
    ) -> None:
        checksums.on_version_apply(ctx, step, heads, run_args)  # in the step's transaction
        resume.finished(ctx, step)  # a half-applied migration's record goes with it
        this_run.timer.on_version_apply(ctx, step, heads, run_args)

    # Entered in order, so connection failures are translated too.
    with (
        friendly_errors(database),
        nullcontext(given) if isinstance(given, Connection) else given.connect() as connection,
        locking.held(connection, database.schema) as migration_lock,  # PostgreSQL; SQLite: BEGIN IMMEDIATE
        rebuilds.keep_expression_indexes(connection),  # SQLite's batch rebuilds cannot see them
    ):
        context.configure(
            connection=connection,
            **context_options(target_metadata),  # the same as every run: naming convention included
            on_version_apply=after_each_step,
            # What autogenerate's hooks read, as one typed value (the key is run.CONTEXT_KEY).
            dbtools=run.InContext(
                project_root=paths.root_of(config),
                rename_decisions=this_run.rename_decisions,
                renders_online=this_run.renders_online,
            ),
            **compare_options(),
            **schema_options(),
        )
        for attempt in migration_lock.attempts():  # PostgreSQL retries a run that hit a lock timeout
            with attempt, context.begin_transaction():
                migration_context = context.get_context()
                # Read once, under the lock: nothing below moves them before the migrations run.
                heads = migration_context.get_current_heads()
                # A squash (make squash): the history this database follows, before anything reads it.
                squashes.adopt(
                    context.script,
                    heads,
                    lambda: checksums.recorded(connection),
                    getattr(environment, "context_opts", {}).get("destination_rev"),  # None: check, current
                )
                refusals.check_database(
                    migration_context,
                    context.script,
                    heads,
                    lambda: target_metadata or load_models(),
                    adopting=this_run.adopting,
                )
                if this_run.autogenerates:
                    refusals.check_autogenerate_base(migration_context, context.script)
                    checksums.refuse_skipped(connection, context.script, heads)  # not "in sync"
                skipped = []
                if this_run.applies_migrations:
                    skipped = checksums.verify(
                        connection, context.script, heads, out_of_order=this_run.out_of_order
                    )
                    if skipped:
                        applied = checksums.applied_revisions(context.script.revision_map, heads)
                        outoforder.check_disjoint(skipped, applied, connection.dialect.name)
                    if this_run.backs_up:
                        backup.before_change(
                            connection, migration_context, heads, database.sqlite_path, changes=bool(skipped)
                        )
                outoforder.apply(connection, migration_context, skipped)
                # A migration that commits midway resumes there (or, one step down, is reverted).
                resume.install(
                    migration_context, context.script, reverts_half_applied=this_run.reverts_half_applied
                )
                this_run.timer.start(heads)
                context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

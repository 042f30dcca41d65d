"""What differs between migration runs, decided by whoever starts the run.

env.py runs the same code for every command and reads these fields; it never
asks which command is running. Callers that set nothing (``alembic`` on the
command line, pytest-alembic, scripts) get the full safety net.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine

from dbtools.runtime.timing import StepTimer

if TYPE_CHECKING:
    from dbtools.autogenerate.renames import Decisions

KEY = "dbtools.run"


@dataclass(frozen=True)
class Run:
    # Migrate through this instead of opening the configured database
    # (make stamp and make rehearse hold the migration lock on it already).
    connection: Connection | Engine | None = None
    # Migrate, or render with --sql, this database instead of the configured one
    # (make lint renders PostgreSQL's SQL whatever DATABASE_URL says).
    url: URL | None = None
    # Load the models up front: autogenerate compares with them. Otherwise they
    # are loaded only if a guard needs them, which keeps a no-op upgrade cheap.
    needs_models: bool = True
    # May create a missing SQLite file. Commands that only look refuse instead.
    creates_database: bool = True
    # May apply or revert migrations: the applied history must be intact first.
    applies_migrations: bool = True
    # Compares the models with the database: it must be at the single head.
    autogenerates: bool = False
    # make migration: which renames the user accepted, and whether to ask (dbtools.autogenerate.renames).
    rename_decisions: Decisions | None = None
    # Autogenerate the online form of each change on PostgreSQL (dbtools.autogenerate.nonblocking);
    # off only for make bench-online's baseline, Alembic's own rendering.
    renders_online: bool = True
    # make stamp: a schema without migration history is what is being adopted.
    adopting: bool = False
    # Copy a SQLite file before changing it (make rehearse works on a copy already).
    backs_up: bool = True
    # Each step's wall time, read by make rehearse.
    timer: StepTimer = field(default_factory=StepTimer)

    def start_with(self, config: Config) -> Config:
        config.attributes[KEY] = self
        return config


def of(config: Config) -> Run:
    """This run's options; a connection in ``attributes["connection"]`` counts too.

    That key is Alembic's cookbook recipe for sharing a connection, and how
    pytest-alembic hands its engine to env.py.
    """
    run = config.attributes.get(KEY) or Run()
    shared = config.attributes.get("connection")
    if run.connection is None and shared is not None:
        run = replace(run, connection=shared)
    return run

"""``make current``: the database's revision. Only looks: never creates the database."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from dbtools.run import Run


def current(config: Config) -> None:
    run = Run(needs_models=False, creates_database=False, applies_migrations=False)
    command.current(run.start_with(config))

"""``make migration``: autogenerate a migration from the models, or nothing if they did not change."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from dbtools import autogen
from dbtools.run import Run


def migration(config: Config, message: str) -> None:
    run = Run(creates_database=False, applies_migrations=False, autogenerates=True)
    command.revision(
        run.start_with(config),
        message=message,
        autogenerate=True,
        process_revision_directives=autogen.write_or_skip,
    )

"""``make check``: fail when the models differ from the migrated database."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from dbtools.run import Run


def check(config: Config) -> None:
    run = Run(creates_database=False, applies_migrations=False, autogenerates=True)
    command.check(run.start_with(config))

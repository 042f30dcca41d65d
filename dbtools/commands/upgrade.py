"""``make upgrade``: apply pending migrations; creates a missing SQLite database."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from dbtools.run import Run


def upgrade(config: Config, revision: str = "head") -> None:
    # Only migrating: the models load only if a guard needs them, so a no-op stays cheap.
    command.upgrade(Run(needs_models=False).start_with(config), revision)

"""``make downgrade``: revert migrations, one by default."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from dbtools.run import Run


def downgrade(config: Config, revision: str = "-1") -> None:
    command.downgrade(Run(needs_models=False).start_with(config), revision)

"""``make downgrade``: revert migrations, one by default. Never creates a database."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.util import CommandError

from dbtools.run import Run


def downgrade(config: Config, revision: str = "-1") -> None:
    try:
        # One step back from a half-applied migration reverts that migration (dbtools.runtime.resume).
        run = Run(needs_models=False, creates_database=False, reverts_half_applied=revision == "-1")
        command.downgrade(run.start_with(config), revision)
    except CommandError as exc:
        if str(exc) == "Ambiguous walk":  # a relative step back from a merge revision
            raise CommandError(
                f"the database is at a merge revision, so {revision} steps back along more than one "
                "branch; nothing was changed. Name the revision to reach: `make downgrade rev=<revision>` "
                "(`make history` lists them)"
            ) from None
        raise

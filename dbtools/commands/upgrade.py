"""``make upgrade``: apply pending migrations; creates a missing SQLite database."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import MultipleHeads, ResolutionError
from alembic.util import CommandError

from dbtools import database, project
from dbtools.run import Run


def upgrade(config: Config, revision: str = "head") -> None:
    try:
        if not database.exists(project.database_url(config)):
            # Resolve the target before a file is created for it: a typo must not leave an empty app.db.
            ScriptDirectory.from_config(config)._upgrade_revs(revision, ())  # type: ignore[arg-type]
        # Only migrating: the models load only if a guard needs them, so a no-op stays cheap.
        command.upgrade(Run(needs_models=False).start_with(config), revision)
    except CommandError as exc:
        if isinstance(exc.__cause__, MultipleHeads):
            heads = ", ".join(sorted(exc.__cause__.heads))
            raise CommandError(
                f"the migration history has several heads ({heads}); nothing was changed. "
                "Run `make upgrade rev=heads` to apply every branch, or merge them first: "
                'alembic merge heads -m "merge"'
            ) from None
        if isinstance(exc.__cause__, ResolutionError):
            raise CommandError(f"{exc}; nothing was changed. `make history` lists the revisions") from None
        raise

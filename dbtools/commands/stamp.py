"""``make stamp``: adopt a database that was built without migrations.

Stamping writes a revision without running anything, so stamping a database
whose schema is not what the migrations would have built hides the difference
forever. This stamps head only when the live schema matches the models, under
the migration lock, in one transaction.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError

from dbtools import target
from dbtools.autogenerate import drift
from dbtools.run import Run
from dbtools.runtime.locking import locked
from models import Base


def stamp(config: Config) -> None:
    database = target.resolve(config)
    if not database.exists():
        raise CommandError(
            f"{database.sqlite_path} does not exist; there is nothing to adopt. Run `make upgrade`"
        )
    with locked(database) as connection:
        current = MigrationContext.configure(connection).get_current_heads()
        if current:
            raise CommandError(
                f"{database.masked} already has migration history (at {', '.join(current)}); "
                "nothing to adopt. Use `make upgrade`"
            )
        diffs = drift.differences(connection, Base.metadata)
        if diffs:
            listing = "; ".join(str(diff) for diff in diffs)
            raise CommandError(
                f"the schema of {database.masked} differs from the models, so it was not stamped: "
                f"{listing}. Make it match the models first"
            )
        run = Run(connection=connection, adopting=True, applies_migrations=False)
        command.stamp(run.start_with(config), "head")
    print(f"Adopted {database.masked}: its schema matches the models; stamped at head.")

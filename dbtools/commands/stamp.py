"""``make stamp``: adopt a database that was built without migrations.

Stamping writes a revision without running anything, so stamping a database
whose schema is not what the migrations would have built hides the difference
forever. This stamps head only when the live schema matches the models, under
the migration lock, in one transaction.
"""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError

from dbtools import paths, target
from dbtools.autogenerate import hooks
from dbtools.run import Run
from dbtools.runtime.locking import locked
from dbtools.target import mask
from models import Base


def stamp(config: Config) -> None:
    url = paths.database_url(config)
    if not target.exists(url):
        raise CommandError(
            f"{target.sqlite_path(url)} does not exist; there is nothing to adopt. Run `make upgrade`"
        )
    with locked(url) as connection:
        context = MigrationContext.configure(connection, opts=hooks.COMPARE_OPTIONS)
        current = context.get_current_heads()
        if current:
            raise CommandError(
                f"{mask(url)} already has migration history (at {', '.join(current)}); "
                "nothing to adopt. Use `make upgrade`"
            )
        diffs = compare_metadata(context, Base.metadata)
        if diffs:
            listing = "; ".join(str(diff) for diff in diffs)
            raise CommandError(
                f"the schema of {mask(url)} differs from the models, so it was not stamped: "
                f"{listing}. Make it match the models first"
            )
        run = Run(connection=connection, adopting=True, applies_migrations=False)
        command.stamp(run.start_with(config), "head")
    print(f"Adopted {mask(url)}: its schema matches the models; stamped at head.")

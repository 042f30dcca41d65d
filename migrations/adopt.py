"""``make stamp``: adopt a database that was built without migrations.

Stamping writes a revision without running anything, so stamping a database
whose schema is not what the migrations would have built hides the difference
forever. This stamps head only when the live schema matches the models, under
the migration lock, in one transaction.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError

from migrations import autogen, locking
from migrations.database import build_engine, check_sqlite_file, mask, resolve_url, sqlite_path
from migrations.errors import friendly_errors
from models import Base

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def adopt(config: Config) -> str:
    url = resolve_url(config.get_main_option("sqlalchemy.url"), PROJECT_ROOT)
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            raise CommandError(f"{path} does not exist; there is nothing to adopt. Run `make upgrade`")
        check_sqlite_file(path)
    with friendly_errors(url), build_engine(url).connect() as connection, connection.begin():
        locking.acquire(connection)
        context = MigrationContext.configure(connection, opts=autogen.COMPARE_OPTIONS)
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
        config.attributes.update(connection=connection, adopting=True)
        command.stamp(config, "head")
        return mask(url)

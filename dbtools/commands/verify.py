"""``make verify``: every applied migration still matches the checksum recorded when it ran."""

from __future__ import annotations

from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from dbtools import database, integrity, project
from dbtools.database import mask
from dbtools.locking import locked


def verify(config: Config) -> None:
    script = integrity.whole_history(config)
    url = project.database_url(config)
    if not database.exists(url, writes=False):
        print(f"{mask(url)} does not exist yet: nothing is applied, so nothing to verify.")
        return
    with locked(url, writes=False) as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
        integrity.verify(connection, script, heads)
        count = len(integrity.applied_revisions(script.revision_map, heads))
    print(f"OK: all {count} applied migration(s) of {mask(url)} match their files.")

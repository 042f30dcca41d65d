"""``make verify``: every applied migration still matches the checksum recorded when it ran."""

from __future__ import annotations

from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from dbtools import target
from dbtools.runtime import checksums, squashes
from dbtools.runtime.locking import locked


def verify(config: Config) -> None:
    script = checksums.whole_history(config)
    database = target.resolve(config)
    if not database.exists(writes=False):
        print(f"{database.masked} does not exist yet: nothing is applied, so nothing to verify.")
        return
    with locked(database, writes=False) as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
        squashes.adopt(script, heads, lambda: checksums.recorded(connection))  # the history it follows
        checksums.verify(connection, script, heads)
        count = len(checksums.applied_revisions(script.revision_map, heads))
    print(f"OK: all {count} applied migration(s) of {database.masked} match their files.")

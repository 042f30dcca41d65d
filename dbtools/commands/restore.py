"""``make restore``: replace the SQLite database with a backup, the newest by default."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from dbtools import target
from dbtools.runtime import restore as engine


def restore(config: Config, file: str | None = None) -> None:
    database = target.resolve(config)
    if database.sqlite_path is None:
        raise CommandError(
            f"make restore restores SQLite backups; {database.masked} is not a SQLite file. "
            "Use your server's backups (pg_dump / pg_restore) for PostgreSQL"
        )
    script = ScriptDirectory.from_config(config)
    source = engine.choose(database.sqlite_path, file)
    revision, kept = engine.replace_database(database.sqlite_path, source, script)
    if kept is not None:
        print(f"Kept the replaced database as {kept}.")
    print(f"Restored {database.sqlite_path} from {source}; it is at revision {revision}.")

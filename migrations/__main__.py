"""``python -m migrations <command>``: the project's commands beside Alembic's.

The Makefile calls these (``make stamp``, ``verify``, ``repair``, ``status``,
``restore``, ``rehearse``).
Each expected failure is one ``FAILED:`` line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL

from migrations import integrity, rehearse, restore, status
from migrations.adopt import adopt
from migrations.database import check_sqlite_file, mask, resolve_url, sqlite_path
from migrations.locking import locked

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def stamp(config: Config, _: str | None = None) -> None:
    where = adopt(config)
    print(f"Adopted {where}: its schema matches the models; stamped at head.")


def verify(config: Config, _: str | None = None) -> None:
    url, script = _database_and_history(config)
    if not _exists(url):
        print(f"{mask(url)} does not exist yet: nothing is applied, so nothing to verify.")
        return
    with locked(url) as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
        integrity.verify(connection, script, heads)
        count = len(integrity.applied_revisions(script.revision_map, heads))
    print(f"OK: all {count} applied migration(s) of {mask(url)} match their files.")


def repair(config: Config, _: str | None = None) -> None:
    url, script = _database_and_history(config)
    if not _exists(url):
        raise CommandError(f"{mask(url)} does not exist; there is nothing to repair")
    with locked(url) as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
        before = {
            problem.revision: integrity.recorded_source(connection, problem.revision)
            for problem in integrity.problems(connection, script, heads)
            if problem.kind == "changed"
        }
        found = integrity.repair(connection, script, heads)
    if not found:
        print(f"Nothing to repair: every applied migration of {mask(url)} matches its recorded checksum.")
        return
    for problem in found:
        rev = script.revision_map.get_revision(problem.revision)
        if problem.kind == "changed" and isinstance(rev, Script):
            now = integrity.read_script(str(rev.path)).splitlines(keepends=True)
            sys.stdout.writelines(
                difflib.unified_diff(
                    before[problem.revision].splitlines(keepends=True),
                    now,
                    f"{problem.revision} as applied",
                    f"{problem.revision} now ({Path(str(rev.path)).name})",
                )
            )
        verb = "Re-recorded" if problem.kind == "changed" else "Recorded"
        print(f"{verb} {problem.revision}: {problem.describe()}.")
    print(f"Repaired {len(found)} record(s) in {mask(url)}.")


def show_status(config: Config, _: str | None = None) -> None:
    url = _url(config)
    print("\n".join(status.collect(config, url).lines()))


def restore_backup(config: Config, file: str | None) -> None:
    url = _url(config)
    database = sqlite_path(url)
    if database is None:
        raise CommandError(
            f"make restore restores SQLite backups; {mask(url)} is not a SQLite file. "
            "Use your server's backups (pg_dump / pg_restore) for PostgreSQL"
        )
    script = ScriptDirectory.from_config(config)
    source = restore.choose(database, file)
    revision, kept = restore.restore(database, source, script)
    if kept is not None:
        print(f"Kept the replaced database as {kept}.")
    print(f"Restored {database} from {source}; it is at revision {revision}.")


def rehearse_upgrade(config: Config, rev: str | None) -> None:
    url = _url(config)
    print("\n".join(rehearse.rehearse(config, url, rev or "head").lines()))


Command = Callable[[Config, str | None], None]
COMMANDS: dict[str, tuple[Command, str]] = {
    "stamp": (stamp, "adopt a database built without migrations, if it matches the models"),
    "verify": (verify, "check every applied migration against its recorded checksum"),
    "repair": (repair, "show what differs, then re-record the checksums of the applied files"),
    "status": (show_status, "applied and pending migrations, checksums and model drift"),
    "restore": (restore_backup, "replace the SQLite database with a backup (the newest, or FILE)"),
    "rehearse": (rehearse_upgrade, "run the pending migrations (up to REV), time them, roll back"),
}


def _url(config: Config) -> URL:
    return resolve_url(config.get_main_option("sqlalchemy.url"), PROJECT_ROOT)


def _database_and_history(config: Config) -> tuple[URL, ScriptDirectory]:
    """The configured database, and the migration history once it is known to be whole."""
    script = ScriptDirectory.from_config(config)
    integrity.check_history(script)
    return _url(config), script


def _exists(url: URL) -> bool:
    """A SQLite file that is not there yet has nothing applied; other backends are asked."""
    path = sqlite_path(url)
    if path is None:
        return True
    if path.exists():
        check_sqlite_file(path)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrations", description=__doc__)
    parser.add_argument(
        "command", choices=COMMANDS, help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items())
    )
    parser.add_argument("target", nargs="?", help="restore: the backup FILE; rehearse: the REV to reach")
    args = parser.parse_args(argv)
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    try:
        COMMANDS[args.command][0](config, args.target)
    except CommandError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

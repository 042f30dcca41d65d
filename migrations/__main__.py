"""``python -m migrations <command>``: the project's commands beside Alembic's.

The Makefile calls these (``make stamp``, ``verify``, ``repair``, ``status``).
Each expected failure is one ``FAILED:`` line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL

from migrations import integrity, status
from migrations.adopt import adopt
from migrations.database import check_sqlite_file, mask, resolve_url, sqlite_path
from migrations.locking import locked

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def stamp(config: Config) -> None:
    where = adopt(config)
    print(f"Adopted {where}: its schema matches the models; stamped at head.")


def verify(config: Config) -> None:
    url = resolve_url(config.get_main_option("sqlalchemy.url"), PROJECT_ROOT)
    script = ScriptDirectory.from_config(config)
    integrity.check_history(script)
    if not _exists(url):
        print(f"{mask(url)} does not exist yet: nothing is applied, so nothing to verify.")
        return
    with locked(url) as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
        integrity.verify(connection, script, heads)
        count = len(integrity.applied_revisions(script.revision_map, heads))
    print(f"OK: all {count} applied migration(s) of {mask(url)} match their files.")


def repair(config: Config) -> None:
    url = resolve_url(config.get_main_option("sqlalchemy.url"), PROJECT_ROOT)
    script = ScriptDirectory.from_config(config)
    integrity.check_history(script)
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


def show_status(config: Config) -> None:
    url = resolve_url(config.get_main_option("sqlalchemy.url"), PROJECT_ROOT)
    print("\n".join(status.collect(config, url).lines()))


COMMANDS = {
    "stamp": (stamp, "adopt a database built without migrations, if it matches the models"),
    "verify": (verify, "check every applied migration against its recorded checksum"),
    "repair": (repair, "show what differs, then re-record the checksums of the applied files"),
    "status": (show_status, "applied and pending migrations, checksums and model drift"),
}


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
    args = parser.parse_args(argv)
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    try:
        COMMANDS[args.command][0](config)
    except CommandError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

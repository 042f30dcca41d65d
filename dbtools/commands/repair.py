"""``make repair``: show how applied migrations differ from their files, then re-record them."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from alembic.util import CommandError

from dbtools import target
from dbtools.runtime import checksums, squashes
from dbtools.runtime.checksums import Mismatch
from dbtools.runtime.digest import read_script
from dbtools.runtime.locking import locked


def repair(config: Config) -> None:
    script = checksums.whole_history(config)
    database = target.resolve(config)
    if not database.exists():
        raise CommandError(f"{database.masked} does not exist; there is nothing to repair")
    with locked(database) as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
        squashes.adopt(script, heads, lambda: checksums.recorded(connection))  # the history it follows
        before = {
            problem.revision: checksums.recorded_source(connection, problem.revision)
            for problem in checksums.problems(connection, script, heads)
            if problem.kind is Mismatch.EDITED
        }
        found = checksums.repair(connection, script, heads)
    if not found:
        print(
            f"Nothing to repair: every applied migration of {database.masked} matches its recorded checksum."
        )
        return
    for problem in found:
        rev = script.revision_map.get_revision(problem.revision)
        if problem.kind is Mismatch.EDITED and isinstance(rev, Script):
            now = read_script(str(rev.path)).splitlines(keepends=True)
            sys.stdout.writelines(
                difflib.unified_diff(
                    before[problem.revision].splitlines(keepends=True),
                    now,
                    f"{problem.revision} as applied",
                    f"{problem.revision} now ({Path(str(rev.path)).name})",
                )
            )
        verb = "Re-recorded" if problem.kind is Mismatch.EDITED else "Recorded"
        print(f"{verb} {problem.revision}: {problem.describe()}.")
    print(f"Repaired {len(found)} record(s) in {database.masked}.")

"""``make lint``'s own checks: a current head file, one head; no migration that loses data or locks a
table without saying why."""

from __future__ import annotations

import sys

from alembic.config import Config
from alembic.util import CommandError

from dbtools.autogenerate import headfile
from dbtools.lint.acknowledgements import DESTRUCTIVE, LOCKING
from dbtools.lint.review import review


def lint(config: Config, paths: list[str] | None = None) -> None:
    if not paths:  # the whole history: its head file first, so two heads are one clear line
        headfile.check(config)
    verdict = review(config, paths or [])
    for line in verdict.notes:
        print(line)
    for line in verdict.refused:
        print(line, file=sys.stderr)
    if verdict.refused:
        raise CommandError(
            f"{len(verdict.refused)} hazard(s) that the migration does not acknowledge; make "
            f'them safe, or say why they are intended: `{DESTRUCTIVE} = "<reason>"` for data loss, '
            f'`{LOCKING} = {{"<squawk rule>": "<reason>"}}` for a lock'
        )
    clean = "no unacknowledged data loss or PostgreSQL lock hazard"
    print(f"Migration lint: {verdict.files} migration(s), {clean}.")

"""``make lint``'s own check: no migration may lose data without saying why.

ruff and mypy run beside it in the Makefile; this is the part only this
project knows (see ``dbtools.destructive``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config

from dbtools.destructive import MARKER, DestructiveChanges, scan
from dbtools.project import VERSIONS


def lint(config: Config, paths: list[str] | None = None) -> None:
    given = [Path(path) for path in paths or []] or [VERSIONS]
    files = sorted(f for p in given for f in (p.glob("*.py") if p.is_dir() else [p]))
    unacknowledged = []
    for path in files:
        found, reason = scan(path)
        if found and reason:
            print(f"{path.name}: destructive, acknowledged ({reason})")
        elif found:
            unacknowledged.extend(found)
    for finding in unacknowledged:
        print(finding, file=sys.stderr)
    if unacknowledged:
        raise DestructiveChanges(
            f"{len(unacknowledged)} destructive operation(s) in upgrade() without "
            f'`{MARKER} = "<reason>"` in the migration; make them safe, or add the marker '
            "saying why the data loss is intended",
            unacknowledged,
        )
    print(f"Destructive-change check: {len(files)} migration(s), nothing unacknowledged.")

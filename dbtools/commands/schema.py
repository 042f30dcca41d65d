"""``make schema``: rewrite schema/*.sql, the DDL at head, or with ``--check`` fail when stale."""

from __future__ import annotations

import sys

from alembic.config import Config

from dbtools.paths import SCHEMA, root_of
from dbtools.runtime import checksums, snapshot
from dbtools.runtime.snapshot import StaleSchema


def schema(config: Config, check: bool = False) -> None:
    snapshots = snapshot.render(checksums.whole_history(config))
    diffs = {}
    folder = root_of(config) / SCHEMA
    for name, fresh in snapshots.items():
        path = folder / name
        diff = snapshot.stale(path, fresh)
        if not diff:
            print(f"schema/{name} is up to date.")
        elif check:
            sys.stdout.write(diff)
            diffs[name] = diff
        else:
            folder.mkdir(exist_ok=True)
            path.write_text(fresh)
            print(f"Wrote schema/{name}.")
    if diffs:
        raise StaleSchema("the schema snapshot is stale; run `make schema` and commit it", diffs)

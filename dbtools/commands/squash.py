"""``make squash upto=<rev>``: one migration in place of every one up to ``<rev>``; ``prune=1`` later.

The plan and its refusals (``dbtools.autogenerate.squash``), the scratch
databases the old migrations build and the squash must build again
(``dbtools.runtime.replay``), then the file, written only once proved. How
each database then sees the squash is ``dbtools.runtime.squashes``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from dbtools import paths
from dbtools.autogenerate import squash as files
from dbtools.runtime import replay, squashes
from dbtools.runtime.digest import file_checksum


def squash(config: Config, upto: str = "", prune: str = "0", allow_data_loss: str = "0") -> None:
    for name, value in (("prune", prune), ("allow_data_loss", allow_data_loss)):
        if value not in ("0", "1"):
            raise CommandError(f"{name}={value!r}: give 1 (or 0); nothing was written")
    if prune == "1":
        pruning = files.plan_prune(config)
        edited = [rev for rev, path in pruning.files.items() if file_checksum(path) != pruning.replaces[rev]]
        if edited:  # the squash was proved against the files as they were
            raise CommandError(
                f"migration(s) {', '.join(edited)} changed since the squash was written and proved; "
                "put them back (git checkout), or delete the squash and make it again; nothing was changed"
            )
        files.prune(pruning)
        print(
            f"Pruned: {len(pruning.files)} migration file(s) deleted; {pruning.target.name} replaces them. "
            "A database still inside the squashed range is now refused (it needs the old files)."
        )
        return
    plan = files.plan(config, upto, allow_data_loss=allow_data_loss == "1")
    replaces = {rev.revision: file_checksum(str(rev.path)) for rev in plan.replaced}
    with replay.scratch_server() as admin:
        old = replay.dump_at(ScriptDirectory.from_config(config), plan.upto, admin, "the migrations")
        text = files.render(plan, replaces, old.sqlite, old.postgresql_script, paths.root_of(config))
        with tempfile.TemporaryDirectory() as folder:
            candidate = Path(folder) / plan.file_name()
            candidate.write_text(text, encoding="utf-8")
            script = ScriptDirectory.from_config(config)
            squashes.follow(script, squashes.load(candidate))
            new = replay.dump_at(script, plan.upto, admin, "the squash's statements")
    found = replay.differences(old, new)
    if found:
        raise CommandError(
            f"the squash does not build what the migrations up to {plan.upto} build "
            f"({replay.describe(found)}); nothing was written"
        )
    path = files.write(config, plan, text)
    print(
        f"Wrote {path.relative_to(paths.root_of(config))}: {len(plan.replaced)} migrations up to {plan.upto}."
    )
    backends = (
        "an empty SQLite and an empty PostgreSQL database" if new.postgresql else "an empty SQLite database"
    )
    print(f"Proved: {backends} built by it dump the same as by them.")
    if plan.carried:
        print(f"Reference rows carried over from: {', '.join(step.describe() for step in plan.carried)}.")
    if plan.left_out:
        print(f"Left out (allow_data_loss=1): {', '.join(step.describe() for step in plan.left_out)}.")
    if plan.commits_midway:
        print(
            f"Supported: {', '.join(plan.commits_midway)} commit(s) midway (autocommit_block); "
            "the squash builds an empty database in one transaction, which needs none of that."
        )
    print("The old files stay: once every database has passed it, `make squash prune=1`.")

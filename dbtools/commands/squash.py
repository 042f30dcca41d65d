"""``make squash upto=<rev>``: one migration in place of every one up to ``<rev>``; ``prune=1`` later.

The plan and its refusals (``dbtools.autogenerate.squash``), the scratch
databases the old migrations build and the squash must build again
(``dbtools.runtime.replay``), then the file, written only once proved. How
each database then sees the squash is ``dbtools.runtime.squashes``.
"""

from __future__ import annotations

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
        if upto:
            raise CommandError(
                "prune=1 deletes the files of the squash already written; give it alone, without upto=. "
                "Nothing was deleted"
            )
        pruning = files.plan_prune(config)
        squashes.refuse_changed_since(pruning.replaces, pruning.files)  # it was proved against them
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
        new = replay.through_squash(config, plan.file_name(), text, admin)
    found = replay.differences(old, new)
    if found:
        raise CommandError(
            f"the squash does not build what the migrations up to {plan.upto} build "
            f"({replay.describe(found)}); nothing was written"
        )
    path = files.write(config, plan, text)
    print(
        "\n".join(
            plan.report(path.relative_to(paths.root_of(config)), proved_on_postgresql=bool(new.postgresql))
        )
    )

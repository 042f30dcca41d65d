"""``make upgrade``: apply pending migrations; creates a missing SQLite database.

``phase=expand`` stops before the first pending contract revision (``dbtools.runtime.phases``).
After a full run to head it records what the no-op fast path needs (``dbtools.runtime.fastpath``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.script.revision import MultipleHeads, ResolutionError
from alembic.util import CommandError

from dbtools import target
from dbtools.paths import VERSIONS
from dbtools.run import Run
from dbtools.runtime import fastpath, phases, squashes
from dbtools.runtime.phases import Phase
from dbtools.target import Target


def upgrade(config: Config, revision: str = "head", out_of_order: str = "0", phase: str = "") -> None:
    if out_of_order not in ("0", "1"):
        raise CommandError(f"out_of_order={out_of_order!r}: give 1 (or 0); nothing was changed")
    stop = Phase.given(phase)
    seen = fastpath.fingerprint()  # before Alembic reads a single migration file
    database = target.resolve(config)
    try:
        if not database.exists():
            # Resolve the target before a file is created for it: a typo must not leave an empty app.db.
            ScriptDirectory.from_config(config)._upgrade_revs(revision, ())  # type: ignore[arg-type]
        # Only migrating: the models load only if a guard needs them, so a no-op stays cheap.
        run = Run(needs_models=False, out_of_order=out_of_order == "1")
        config = run.start_with(config)
        if stop is Phase.ALL:
            command.upgrade(config, revision)
        else:  # Alembic's command.upgrade, its steps cut before the first pending contract revision
            script = ScriptDirectory.from_config(config)
            with EnvironmentContext(
                config,
                script,
                fn=lambda heads, _: phases.upgrade_steps(script, revision, heads, stop),
                destination_rev=revision,
            ):
                script.run_env()
    except CommandError as exc:
        if isinstance(exc.__cause__, MultipleHeads):
            heads = ", ".join(sorted(exc.__cause__.heads))
            raise CommandError(
                f"the migration history has several heads ({heads}); nothing was changed. "
                "Join them with `make rebase` (your branch's migrations after the other's), "
                "or run `make upgrade rev=heads` to apply every branch as it is"
            ) from None
        if isinstance(exc.__cause__, ResolutionError):
            raise CommandError(f"{exc}; nothing was changed. `make history` lists the revisions") from None
        raise
    if revision == "head" and stop is Phase.ALL:
        _remember(config, database, seen)


def _remember(config: Config, database: Target, seen: str) -> None:
    """Plain SQLite files only: PostgreSQL, URI filenames and memory take the full path every time."""
    path = database.plain_file
    if path is None or fastpath.recorded(path, seen):
        return
    script = ScriptDirectory.from_config(config)  # Alembic's graph: the heads and every revision's file
    squash = squashes.pending(script)
    if squash is not None and squashes.came_through_file(path, squash):
        squashes.follow(script, squash)  # as the run did: the squash's file, not the ones it replaces
    files = {rev.revision: Path(str(rev.path)) for rev in script.walk_revisions()}
    if any(file.parent != VERSIONS for file in files.values()):
        return
    replaced = {
        revision: checksum for one in squashes.pruned(script) for revision, checksum in one.replaces.items()
    }
    fastpath.remember(
        path, script.get_heads(), {rev: file.name for rev, file in files.items()}, seen, replaced
    )

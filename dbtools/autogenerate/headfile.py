"""``migrations/head.txt``: the migration graph's head in one tracked line (alembic-linear-migrations).

Two branches that each add a migration from the same parent write different
revisions to that line, so ``git merge`` conflicts there, at once, instead of
every command failing later on "several heads". The package writes and reads
the file; this module wires it in:

- plain ``alembic revision`` rewrites it through the post-write hook
  ``alembic_linear`` in ``alembic.ini`` (a new process, as any hook);
- ``make migration`` drops that hook from its run and rewrites the file in
  its own process, which has read the graph already (``update``);
- ``make lint`` refuses a stale or missing file, or a graph with two heads,
  in one line with the fix (``check``).
"""

from __future__ import annotations

import re

from alembic.config import Config
from alembic.util import CommandError
from alembic_linear_migrations import AlembicLinearError
from alembic_linear_migrations import head as head_file
from alembic_linear_migrations.commands import update as rewrite
from alembic_linear_migrations.config import Project, discover

from dbtools import paths

HOOK = "alembic_linear"
WHERE = "migrations/head.txt"
UPDATE = "`.venv/bin/alembic-linear update`"
REBASE = "`make rebase`"


def without_hook(config: Config) -> Config:
    """``config`` with the head file's post-write hook left out: the caller rewrites the file itself."""
    hooks = config.get_section_option("post_write_hooks", "hooks") or ""
    kept = [name for name in re.split(r", *| +", hooks) if name and name != HOOK]
    config.set_section_option("post_write_hooks", "hooks", ", ".join(kept))
    return config


def _project(config: Config) -> Project:
    return discover(str(paths.root_of(config) / paths.INI.name))


def update(config: Config) -> None:
    """Rewrite the head file from the graph (after make migration wrote a migration)."""
    try:
        rewrite(_project(config))
    except AlembicLinearError as exc:
        raise CommandError(f"{WHERE} was not updated: {_one_line(exc, config)}") from None


def check(config: Config) -> None:
    """Refuse, in one line that says the fix, a head file that does not name the graph's one head."""
    try:
        project = _project(config)
        heads = sorted(project.heads(project.load_script()))
    except AlembicLinearError as exc:  # a broken graph: Alembic's words, on one line
        raise CommandError(f"the migration history cannot be read: {_one_line(exc, config)}") from None
    if len(heads) > 1:
        raise CommandError(
            f"the migration history has {len(heads)} heads ({', '.join(heads)}): two branches each "
            f"added a migration from the same parent; re-point yours onto theirs with {REBASE} "
            f"(`make rebase onto=<their head>` when no git merge or rebase is in progress), review both, "
            f"and commit {WHERE}"
        )
    if not project.head_file.exists():
        raise CommandError(f"{WHERE} is missing; create it with {UPDATE} and commit it")
    try:
        recorded = head_file.read(project.head_file)
    except AlembicLinearError as exc:  # garbage, several lines, conflict markers
        raise CommandError(f"{WHERE} is unreadable: {_one_line(exc, config)}") from None
    if heads and recorded != heads[0]:
        raise CommandError(
            f"{WHERE} is stale: it records {recorded}, but the head is {heads[0]} (a migration added "
            f"without `make migration` or `alembic revision`); run {UPDATE} and commit it"
        )


def _one_line(exc: AlembicLinearError, config: Config) -> str:
    """The package's message, which spans lines, as one; its own command named as this project runs it."""
    text = " ".join(str(exc).split())
    return text.replace(f"{paths.root_of(config)}/", "").replace(
        "Run: alembic-linear", "Run: .venv/bin/alembic-linear"
    )

"""``make rebase``'s file work: which branch moves, the re-pointed file, and putting everything back.

alembic-linear-migrations (pinned exactly, so its private helpers are a fixed
API here) decides which head is ours: git labels the sides of a conflict
``HEAD`` and incoming, and the meaning inverts between ``git merge`` (HEAD is
ours) and ``git rebase`` (HEAD is theirs). This module first reads the whole
plan without writing anything, so every refusal leaves the files as they were;
then it re-points our bottom migration with the package, mends the docstring's
``Revises:`` line the package leaves alone, ruff-formats that file (the
package writes single quotes, which ``make lint`` refuses) and rewrites the
head file. ``Plan.restore`` puts every byte back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from alembic.util import CommandError
from alembic_linear_migrations import AlembicLinearError
from alembic_linear_migrations import head as head_file
from alembic_linear_migrations.config import Project
from alembic_linear_migrations.gitstate import detect
from alembic_linear_migrations.rebase import _ancestry, _base_of_our_branch, _sides
from alembic_linear_migrations.rebase import rebase as package_rebase

from dbtools.autogenerate.headfile import WHERE, _one_line, _project

_REVISES = re.compile(r"^Revises:.*$", re.MULTILINE)


@dataclass
class Plan:
    """What ``make rebase`` will do, read before anything is written."""

    ours: str  # our branch's head: the head after the rebase
    theirs: str  # the other branch's head: our bottom migration's new parent
    moved: list[str]  # our branch's migrations, oldest first: all move, the bottom one is re-pointed
    parent: str | None  # the bottom migration's parent before the rebase (the shared one)
    path: Path  # the bottom migration's file
    head_path: Path
    originals: dict[Path, str | None] = field(default_factory=dict)

    @property
    def bottom(self) -> str:
        return self.moved[0]

    def restore(self) -> None:
        """Every file the rebase wrote, back as it was (a file that did not exist, removed)."""
        for path, text in self.originals.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text, encoding="utf-8")
            forget_bytecode(path)


def plan(config: Config, onto: str | None) -> Plan:
    """Which migrations move onto which head; a ``CommandError`` (nothing written) when it cannot say."""
    try:
        project = _project(config)
        script = project.load_script()
    except AlembicLinearError as exc:
        raise CommandError(f"the migration history cannot be read: {_one_line(exc, config)}") from None
    merges = sorted(rev.revision for rev in script.walk_revisions() if rev.is_merge_point)
    if merges:
        raise CommandError(
            f"the history already has a merge revision ({', '.join(merges)}); make rebase only makes a "
            "history linear and will not rewrite one that merges branches: remove the merge revision "
            "and run it again, or keep the merge and resolve migrations/head.txt by hand; nothing was changed"
        )
    heads = sorted(project.heads(script))
    conflict = _recorded_sides(project, config)
    if len(heads) > 2:
        raise CommandError(
            f"the migration history has {len(heads)} heads ({', '.join(heads)}); make rebase joins two "
            "branches at a time: merge one branch, make rebase, commit, then the next; nothing was changed"
        )
    if onto is not None and onto not in heads:
        known = onto in {rev.revision for rev in script.walk_revisions()}
        what = "is not a head" if known else "is not a revision of this history"
        raise CommandError(
            f"onto={onto} {what}; name the other branch's head"
            + (f" (one of {', '.join(heads)})" if len(heads) == 2 else "")
            + "; nothing was changed"
        )
    if len(heads) < 2:
        raise CommandError(
            f"there is nothing to rebase: the history has one head ({', '.join(heads) or 'none'})"
            + (" and migrations/head.txt has no conflict" if conflict is None else "")
            + "; after a `git merge` or `git rebase` that conflicts in migrations/head.txt, run make rebase "
            "(or say `make rebase onto=<their head>`); nothing was changed"
        )
    if onto is None and conflict is None:
        raise CommandError(
            f"the history has two heads ({', '.join(heads)}) but {WHERE} has no conflict to read the sides "
            f"from ({detect(project.root).description}); name the other branch's head: make rebase "
            f"onto={heads[0]} or onto={heads[1]}; nothing was changed"
        )
    try:
        ours, theirs = _sides(project, onto, heads)
        ours_chain = _ancestry(project, script, ours)
        theirs_chain = _ancestry(project, script, theirs)
        bottom = _base_of_our_branch(ours_chain, theirs_chain)
    except AlembicLinearError as exc:
        raise CommandError(f"{_one_line(exc, config)}; nothing was changed") from None
    moved = list(reversed(ours_chain[: ours_chain.index(bottom) + 1]))
    revision = script.get_revision(bottom)
    parent = revision.down_revision
    return Plan(
        ours=ours,
        theirs=theirs,
        moved=moved,
        parent=parent if isinstance(parent, str) or parent is None else parent[0],
        path=project.script_path(revision),
        head_path=project.head_file,
    )


def _recorded_sides(project: Project, config: Config) -> head_file.ConflictSides | None:
    """The head file's two sides, or None without conflict markers; garbage is refused."""
    try:
        text = project.head_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{WHERE} is missing; nothing was changed") from None
    try:
        sides = head_file.parse_conflict(text, project.head_file)
        if sides is None:
            head_file.parse(text, project.head_file)
        return sides
    except AlembicLinearError as exc:
        raise CommandError(
            f"{WHERE} is unreadable: {_one_line(exc, config)}; restore it (`git checkout --conflict=merge "
            f"{WHERE}` during a merge or rebase), then run make rebase; nothing was changed"
        ) from None


def apply(config: Config, the_plan: Plan) -> None:
    """Re-point the bottom migration onto theirs and rewrite the head file; on any failure, restore both."""
    the_plan.originals = {
        the_plan.path: the_plan.path.read_text(encoding="utf-8"),
        the_plan.head_path: the_plan.head_path.read_text(encoding="utf-8")
        if the_plan.head_path.exists()
        else None,
    }
    try:
        result = package_rebase(_project(config), onto=the_plan.theirs)
        if (result.ours, result.rebased) != (the_plan.ours, the_plan.bottom):  # pragma: no cover
            raise CommandError(f"the re-point moved {result.rebased}, not {the_plan.bottom}")
        text = the_plan.path.read_text(encoding="utf-8")
        the_plan.path.write_text(_REVISES.sub(f"Revises: {the_plan.theirs}", text, count=1), encoding="utf-8")
        _format(the_plan.path)
        forget_bytecode(the_plan.path)
    except AlembicLinearError as exc:
        the_plan.restore()
        raise CommandError(f"{_one_line(exc, config)}; nothing was changed") from None
    except BaseException:
        the_plan.restore()
        raise


def _format(path: Path) -> None:
    """ruff format, as make migration leaves a new file (the package writes single quotes)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(f"ruff could not format {path.name}: {' '.join(done.stderr.split())}")


def forget_bytecode(path: Path) -> None:
    """A same-size rewrite within the second keeps a stale .pyc valid: drop it (as the package does)."""
    with contextlib.suppress(NotImplementedError, ValueError, OSError):
        Path(importlib.util.cache_from_source(str(path))).unlink()
    importlib.invalidate_caches()

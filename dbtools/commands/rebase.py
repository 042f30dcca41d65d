"""``make rebase``: resolve a ``migrations/head.txt`` conflict, then prove the joined history.

After ``git merge`` or ``git rebase`` (or with ``onto=<rev>``), our branch's
migrations move onto the other branch's head (``dbtools.autogenerate.repoint``).
The whole history is then migrated on an in-memory SQLite database and compared
with the models, as ``make check`` does: two branches that touched the same
object fail there, every file is put back, and the one ``FAILED:`` line names
the object and both sides' revisions. A developer's own SQLite database that
applied our migrations steps back below them first (the usual downgrade, with
its backup), and is upgraded through the new order at the end.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from dbtools import paths, target
from dbtools.autogenerate import drift, repoint
from dbtools.run import Run
from dbtools.runtime import scratch

UNMERGED = {"DD", "AU", "UD", "UA", "DU", "AA", "UU"}
# What git keeps while a merge, a rebase or a cherry-pick waits for its conflicts.
IN_PROGRESS = ("MERGE_HEAD", "rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD")


def rebase(config: Config, onto: str | None = None) -> None:
    root = paths.root_of(config)
    in_progress = _unrelated_changes(root)
    plan = repoint.plan(config, onto or None)
    their_side = _their_side(config, plan)
    applied = _applied_here(config, plan)

    repoint.apply(config, plan)  # the files: restored by plan.restore() on any failure below
    try:
        _prove(config, plan, their_side)
    except BaseException:
        plan.restore()
        raise
    rebased = {path: path.read_text(encoding="utf-8") for path in plan.originals}
    if applied:
        _step_back_and_forward(config, plan, rebased)
    print(
        f"Re-pointed {', '.join(plan.moved)} onto {plan.theirs} ({plan.path.name}); "
        f"migrations/head.txt records {plan.ours}, the one head.\n"
        "Proved: the whole history migrates on a scratch SQLite database and matches the models.\n"
        f"Review both branches' migrations, then: git add {plan.path.relative_to(root)} migrations/head.txt"
        f"{in_progress}"
    )


def _unrelated_changes(root: Path) -> str:
    """Refuse a work tree holding changes the merge or rebase did not make; say which operation it is."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", "."],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        operation = subprocess.run(
            [
                "git",
                "rev-parse",
                "--show-prefix",
                *(arg for name in IN_PROGRESS for arg in ("--git-path", name)),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return ""
    if status.returncode != 0:  # not a git work tree: nothing to protect or to read
        return ""
    prefix, *markers = operation.stdout.splitlines() or [""]
    merging = any((root / line).exists() for line in markers)
    versions = f"{prefix}migrations/"
    entries = status.stdout.split("\0")
    unrelated: list[str] = []
    skip = False
    for entry in entries:
        if skip or not entry:
            skip = False
            continue
        code, path = entry[:2], entry[3:]
        skip = code[0] in "RC"  # a rename's original path follows
        if code in UNMERGED:
            continue
        if code == "??":  # a new file changes nothing unless it is a migration
            if path.startswith(versions):
                unrelated.append(path)
        elif code[1] != " " or not merging:
            unrelated.append(path)
    if unrelated:
        shown = ", ".join(unrelated[:5]) + (f" and {len(unrelated) - 5} more" if len(unrelated) > 5 else "")
        raise CommandError(
            f"the work tree has changes the merge or rebase did not make ({shown}); make rebase rewrites "
            "migration files, so commit or stash those first (`git stash`); nothing was changed"
        )
    return "" if not merging else "\nThen finish the merge or rebase: git commit, or git rebase --continue"


def _their_side(config: Config, plan: repoint.Plan) -> list[str]:
    """The other branch's own migrations, oldest first (the ones ours now follow)."""
    script = ScriptDirectory.from_config(config)
    mine = set(plan.moved)
    chain: list[str] = []
    current: str | None = plan.theirs
    while current is not None and current != plan.parent and current not in mine:
        chain.append(current)
        down = script.get_revision(current).down_revision
        current = down if isinstance(down, str) or down is None else down[0]
    return list(reversed(chain))


def _applied_here(config: Config, plan: repoint.Plan) -> bool:
    """Whether the developer's own SQLite file applied our migrations (read without Alembic's run)."""
    database = target.resolve(config)
    path = database.plain_file
    if path is None or not path.is_file():
        return False
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as connection:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return any(row[0] in plan.moved for row in rows)


def _prove(config: Config, plan: repoint.Plan, theirs: list[str]) -> None:
    """The whole history on a scratch database, compared with the models; a clash named in one line."""
    script = ScriptDirectory.from_config(config)
    heads = script.get_heads()
    if list(heads) != [plan.ours]:  # pragma: no cover - the package checks this too
        raise CommandError(f"the re-point left heads {', '.join(heads)}; nothing was changed")
    sides = f"yours ({', '.join(plan.moved)}) and theirs ({', '.join(theirs) or plan.theirs})"
    undo = (
        "nothing was changed. Make the two migrations agree by hand (drop or adjust yours, and the "
        "model), then make rebase again"
    )
    with scratch.memory_engine().connect() as connection:
        try:
            scratch.upgrade(connection, script)
        except Exception as exc:
            raise CommandError(
                f"both branches change {_object(exc)}: {sides} cannot run one after the other "
                f"({_reason(exc)}); {undo}"
            ) from None
        differences = drift.phrases(connection)
    if differences:
        raise CommandError(
            f"{sides} run one after the other, but the result does not match the models "
            f"({'; '.join(differences)}): their changes do not add up to the merged models (one undoes "
            f"the other, or a conflict in models/ was resolved otherwise); {undo}"
        )


def _reason(exc: Exception) -> str:
    text = str(exc.orig) if isinstance(exc, DBAPIError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


_TABLE = re.compile(
    r'\b(?:ALTER TABLE|CREATE TABLE|DROP TABLE|INSERT INTO|UPDATE|ON)\s+"?(\w+)"?', re.IGNORECASE
)
# What SQLite (and Alembic's batch mode) say about the object a statement met, most precise first.
_NAMED = (
    (re.compile(r"duplicate column name: (\w+)"), "{table}.{0}"),
    (re.compile(r"no such column: ([\w.]+)"), "{table}.{0}"),
    (re.compile(r"(index|table|trigger|view) \"?(\w+)\"? already exists"), "{0} {1}"),
    (re.compile(r"no such (index|table): (\w+)"), "{0} {1}"),
    (re.compile(r"^KeyError: '(\w+)'"), "column {0}"),  # batch mode: a column the table no longer has
)


def _object(exc: Exception) -> str:
    """The object a failed statement met (users.phone, index ix_users_email), as far as the error says."""
    statement = exc.statement if isinstance(exc, DBAPIError) else None
    found = _TABLE.search(statement or "")
    table = found.group(1) if found else "?"
    reason = _reason(exc)
    for pattern, shape in _NAMED:
        match = pattern.search(reason)
        if match:
            return shape.format(*match.groups(), table=table).removeprefix("?.")
    return f"table {table}" if found else "the same object"


def _step_back_and_forward(config: Config, plan: repoint.Plan, rebased: dict[Path, str]) -> None:
    """The developer's SQLite file: our migrations reverted in the old order, then all applied in the new."""
    where = target.resolve(config).where
    parent = plan.parent or "base"
    plan.restore()  # the old order, to revert our migrations as they were applied
    try:
        command.downgrade(Run(needs_models=False, creates_database=False).start_with(config), parent)
    except CommandError as exc:  # the files stay as they were, and so does the database (one transaction)
        raise CommandError(f"{where} could not step back to {parent}: {exc}; nothing was changed") from None
    for path, text in rebased.items():
        path.write_text(text, encoding="utf-8")
        repoint.forget_bytecode(path)
    try:
        command.upgrade(Run(needs_models=False).start_with(config), "head")
    except CommandError as exc:
        raise CommandError(
            f"the files are rebased, but upgrading {where} from {parent} failed: {exc}; "
            "run make upgrade once the cause is fixed"
        ) from None

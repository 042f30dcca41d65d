"""Checksums of applied migrations: refuse to build on a history that was rewritten.

Alembic records only a revision id, so a migration edited after it ran (or a
file deleted) goes unnoticed, and databases built from "the same" history
silently differ. Like Flyway and Prisma, every applied revision's script
checksum is recorded in ``alembic_checksums``, in the run's own transaction,
and every migrating run compares before it changes anything.

The table lives exactly as long as some revision is applied: a downgrade to
base drops it, so a database at base holds nothing but ``alembic_version``.
"""

from __future__ import annotations

import enum
import re
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError, RevisionError, RevisionMap
from alembic.util import CommandError
from sqlalchemy import Column, MetaData, String, Table, Text, delete, insert, inspect, select, update
from sqlalchemy.engine import Connection

from dbtools.paths import CHECKSUM_TABLE
from dbtools.runtime import squashes
from dbtools.runtime.digest import checksum_of, legacy_checksum_of, matches, read_script

TABLE_NAME = CHECKSUM_TABLE
REPAIR_HINT = "If the edit was intended, `make repair` shows the differences and re-records the checksums"

checksums = Table(
    TABLE_NAME,
    MetaData(),
    Column("revision", String(32), primary_key=True),
    Column("checksum", String(64), nullable=False),
    # The script as applied, so `make repair` can show what was edited since.
    Column("source", Text, nullable=False),
)


class Mismatch(enum.Enum):
    """How an applied migration differs from its file, as `make status` words it."""

    EDITED = "EDITED since applied"
    MISSING = "FILE MISSING"
    UNRECORDED = "checksum not recorded"
    # Below a recorded revision, never applied: a branch re-pointed after the database ran it.
    SKIPPED = "skipped: never applied here, though later migrations were; see `make upgrade`"


class Problem(NamedTuple):
    revision: str
    kind: Mismatch
    recorded: str | None = None
    actual: str | None = None

    def describe(self) -> str:
        if self.kind is Mismatch.EDITED:
            return f"applied migration {self.revision} was edited after it was applied (checksum differs)"
        if self.kind is Mismatch.MISSING:
            return f"applied migration {self.revision} has no file in migrations/versions any more"
        if self.kind is Mismatch.SKIPPED:
            return f"migration {self.revision} never ran on this database, though later ones did"
        return f"applied migration {self.revision} has no recorded checksum"


class SkippedMigrations(CommandError):
    """Revisions below the database's current one that never ran there, oldest first."""

    def __init__(self, skipped: Sequence[str], later: Sequence[str]) -> None:
        self.skipped, self.later = list(skipped), list(later)
        super().__init__(
            f"migration(s) {', '.join(self.skipped)} never ran on this database, though "
            f"{', '.join(self.later)}, which now come(s) after them, did (a branch re-pointed after "
            "it was applied here); nothing was changed. Apply them now with `make upgrade out_of_order=1`, "
            f"or, on your own database, restore a backup from before {self.later[0]} (`make restore`) "
            "or downgrade it with the files as they were before the re-point, then `make upgrade`"
        )


class BrokenHistory(CommandError):
    """A migration names a down_revision whose file is gone."""


class HistoryRewritten(CommandError):
    """Applied migrations differ from their files; ``problems`` says how, oldest first."""

    def __init__(self, message: str, problems: Sequence[Problem]) -> None:
        super().__init__(message)
        self.problems = list(problems)


def check_history(script: ScriptDirectory) -> RevisionMap:
    """The revision map, or one clear error when the chain of files is broken.

    Alembic fails with a bare KeyError when a migration names a down_revision
    whose file is gone, with a CycleDetected traceback on a loop, and only
    warns when two files share a revision id (then keeps one of them).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            script.revision_map.heads  # noqa: B018 - builds the map, or fails
        except KeyError as exc:
            detail = "; ".join(str(w.message) for w in caught) or f"Revision {exc.args[0]} is not present"
            raise BrokenHistory(
                f"the migration history is broken: {detail}; nothing was changed. "
                "Restore the missing migration file (e.g. from git)"
            ) from None
        except RevisionError as exc:  # CycleDetected, LoopDetected, and their dependency forms
            raise BrokenHistory(
                f"the migration history is broken: {exc}; nothing was changed. "
                "Fix the down_revision of those migrations so the history is a chain"
            ) from None
    for warning in caught:
        duplicate = re.search(r"Revision (\S+) is present more than once", str(warning.message))
        if duplicate:
            files = _files_defining(script, duplicate[1])
            raise BrokenHistory(
                f"the migration history is broken: revision {duplicate[1]} is defined by "
                f"{len(files)} files ({', '.join(files)}); nothing was changed. "
                "Give one of them a new revision id (and fix what names it as down_revision)"
            )
    return script.revision_map


def _files_defining(script: ScriptDirectory, revision: str) -> list[str]:
    """For the error message only; Alembic's own map keeps just one of the files."""
    pattern = re.compile(rf"^revision\b[^=\n]*=\s*['\"]{re.escape(revision)}['\"]", re.MULTILINE)
    return sorted(
        path.name
        for path in Path(script.versions).rglob("*.py")
        if pattern.search(path.read_text(errors="replace"))
    )


def script_for(revision_map: RevisionMap, revision: str) -> Script | None:
    """The applied revision's script; None when its file is gone (Alembic raises instead)."""
    try:
        found = revision_map.get_revision(revision)
    except ResolutionError:
        return None
    return found if isinstance(found, Script) else None


def whole_history(config: Config) -> ScriptDirectory:
    """The migration scripts, once the chain is known to have no missing file."""
    script = ScriptDirectory.from_config(config)
    check_history(script)
    return script


def applied_revisions(revision_map: RevisionMap, heads: Iterable[str]) -> list[Script]:
    """Every revision applied when the database is at ``heads``, oldest first."""
    heads = tuple(heads)
    if not heads:
        return []
    found = revision_map.iterate_revisions(heads, "base")
    return [rev for rev in reversed(list(found)) if isinstance(rev, Script)]


def recorded(connection: Connection) -> dict[str, str]:
    if not inspect(connection).has_table(TABLE_NAME):
        return {}
    rows = connection.execute(select(checksums.c.revision, checksums.c.checksum))
    return {revision: checksum for revision, checksum in rows}


def problems(connection: Connection, script: ScriptDirectory, heads: Iterable[str]) -> list[Problem]:
    """How the applied history differs from the files, oldest revision first."""
    revision_map = check_history(script)
    heads = tuple(heads)
    squashes.refuse_pruned(script, heads)  # inside a pruned squash's range: what it needs, in one line
    found: list[Problem] = [
        Problem(head, Mismatch.MISSING) for head in heads if script_for(revision_map, head) is None
    ]
    if found:
        return found
    record = recorded(connection)
    applied = applied_revisions(revision_map, heads)
    below = skipped_below(applied, record)
    for rev in applied:
        source = read_script(str(rev.path))
        actual = checksum_of(source)
        if rev.revision in below:
            found.append(Problem(rev.revision, Mismatch.SKIPPED, actual=actual))
        elif rev.revision not in record:
            found.append(Problem(rev.revision, Mismatch.UNRECORDED, actual=actual))
        elif (
            not matches(record[rev.revision], source)
            and not _repointed(connection, rev.revision, actual)
            and not squashes.accepts(rev, record[rev.revision])  # applied through the file a squash replaced
        ):
            found.append(Problem(rev.revision, Mismatch.EDITED, record[rev.revision], actual))
    return found


def skipped_below(applied: Sequence[Script], record: Collection[str]) -> dict[str, list[str]]:
    """Each applied revision that never ran, with the recorded (so run) revisions above it.

    ``applied`` is the database's history, oldest first (``applied_revisions``). A revision
    Alembic counts as applied (an ancestor of the current one) without a checksum record,
    below one that has a record, never ran here: every run records all it applies, so it
    was an ancestor only once its branch was re-pointed onto it. Unrecorded revisions below no
    record (a database migrated before checksums, or stamped by hand) are not skipped.
    """
    parents = {rev.revision: rev._all_down_revisions for rev in applied}
    ancestors: dict[str, set[str]] = {}
    for rev in applied:  # oldest first: a revision's parents are done before it
        ancestors[rev.revision] = set().union(
            *({parent} | ancestors.get(parent, set()) for parent in parents[rev.revision])
        )
    below: dict[str, list[str]] = {}
    for rev in applied:
        if rev.revision in record:
            for ancestor in sorted(ancestors[rev.revision]):
                if ancestor not in record and ancestor in parents:
                    below.setdefault(ancestor, []).append(rev.revision)
    order = [rev.revision for rev in applied]
    return {revision: below[revision] for revision in order if revision in below}


def _repointed(connection: Connection, revision: str, actual: str) -> bool:
    """Whether a legacy record (the whole file's sha256) was taken of this file on another parent.

    The record keeps the text as applied: when that text is what the checksum was taken of, and
    differs from the file only in its parent, the migration was re-pointed, not edited.
    """
    query = select(checksums.c.checksum, checksums.c.source).where(checksums.c.revision == revision)
    row = connection.execute(query).one()
    return bool(row.checksum == legacy_checksum_of(row.source) and checksum_of(row.source) == actual)


def verify(
    connection: Connection, script: ScriptDirectory, heads: Iterable[str], *, out_of_order: bool = False
) -> list[Script]:
    """Refuse, before anything changes, when the applied history was rewritten or skipped a migration.

    With ``out_of_order``, skipped migrations are returned (oldest first) instead of refused.
    """
    heads = tuple(heads)
    everything = problems(connection, script, heads)
    found = [problem for problem in everything if problem.kind is not Mismatch.SKIPPED]
    if not found:
        skipped = [problem.revision for problem in everything if problem.kind is Mismatch.SKIPPED]
        if skipped and not out_of_order:
            refuse_skipped(connection, script, heads)
        return [rev for rev in applied_revisions(script.revision_map, heads) if rev.revision in skipped]
    listing = "; ".join(problem.describe() for problem in found)
    hint = REPAIR_HINT
    if all(problem.kind is Mismatch.UNRECORDED for problem in found):
        hint = (
            "The database was migrated before checksums were recorded, or stamped by hand; "
            "`make repair` records them after showing what it records"
        )
    elif any(problem.kind is Mismatch.MISSING for problem in found):
        hint = "Restore the file (e.g. from git), or point DATABASE_URL at the right database"
    raise HistoryRewritten(f"{listing}; nothing was changed. {hint}", found)


def refuse_skipped(connection: Connection, script: ScriptDirectory, heads: Iterable[str]) -> None:
    """For runs that only compare (make check, make migration): a skipped migration is never "in sync"."""
    heads = tuple(heads)
    applied = applied_revisions(script.revision_map, heads)
    below = skipped_below(applied, recorded(connection))
    if below:
        later = [rev.revision for rev in applied if any(rev.revision in above for above in below.values())]
        raise SkippedMigrations(list(below), later)


def sync(connection: Connection, revision_map: RevisionMap, heads: Iterable[str]) -> None:
    """Record every newly applied revision and forget every unapplied one.

    Existing records are never overwritten here: only ``repair`` re-records.
    """
    applied = {rev.revision: rev for rev in applied_revisions(revision_map, heads)}
    record = recorded(connection)
    # Never record a skipped migration as run: only running it (out of order) does.
    for revision in skipped_below(list(applied.values()), record):
        del applied[revision]
    if not applied:
        if inspect(connection).has_table(TABLE_NAME):
            checksums.drop(connection)
        return
    if not inspect(connection).has_table(TABLE_NAME):
        checksums.create(connection)
    gone = [revision for revision in record if revision not in applied]
    if gone:
        connection.execute(delete(checksums).where(checksums.c.revision.in_(gone)))
    new = [
        {"revision": revision, "checksum": checksum_of(source), "source": source}
        for revision, rev in applied.items()
        if revision not in record
        for source in [read_script(str(rev.path))]
    ]
    if new:
        connection.execute(insert(checksums), new)


def on_version_apply(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[str], run_args: Mapping[str, Any]
) -> None:
    """Alembic calls this after each step, inside the run's transaction."""
    assert ctx.connection is not None
    sync(ctx.connection, step.revision_map, heads)


def record_applied(connection: Connection, rev: Script) -> None:
    """Record one migration just run out of order, as ``sync`` records any other."""
    source = read_script(str(rev.path))
    connection.execute(
        insert(checksums), [{"revision": rev.revision, "checksum": checksum_of(source), "source": source}]
    )


def recorded_source(connection: Connection, revision: str) -> str:
    query = select(checksums.c.source).where(checksums.c.revision == revision)
    return str(connection.execute(query).scalar_one())


def repair(connection: Connection, script: ScriptDirectory, heads: Iterable[str]) -> list[Problem]:
    """Re-record the applied files as they are now; return what differed."""
    heads = tuple(heads)
    found = problems(connection, script, heads)
    # A skipped migration is never recorded here: that would make the skip permanent (sync
    # leaves it out too). With nothing else to repair, say so as every other command does.
    if found and all(problem.kind is Mismatch.SKIPPED for problem in found):
        refuse_skipped(connection, script, heads)
    found = [problem for problem in found if problem.kind is not Mismatch.SKIPPED]
    missing = [problem for problem in found if problem.kind is Mismatch.MISSING]
    if missing:
        raise HistoryRewritten(
            f"{missing[0].describe()}; nothing was recorded. Restore the file (e.g. from git) first",
            missing,
        )
    for problem in found:
        if problem.kind is Mismatch.EDITED:
            rev = script.revision_map.get_revision(problem.revision)
            assert isinstance(rev, Script)
            source = read_script(str(rev.path))
            values = {"checksum": checksum_of(source), "source": source}
            connection.execute(
                update(checksums).where(checksums.c.revision == problem.revision).values(**values)
            )
    sync(connection, script.revision_map, heads)
    return found

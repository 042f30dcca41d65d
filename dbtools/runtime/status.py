"""Applied and pending migrations, checksums and model drift in one view.

Modelled on Django's ``showmigrations``: one line per revision, oldest first,
then a summary. It only reads: a missing SQLite file is shown as a database
with everything pending, and is not created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from dbtools.runtime import checksums, phases, resume, scratch, squashes
from dbtools.runtime.checksums import Mismatch
from dbtools.runtime.locking import locked
from dbtools.runtime.phases import Phase
from dbtools.target import Target

# What `make check` would find on a connection, one short phrase per difference.
Drift = Callable[[Connection], list[str]]


@dataclass
class Status:
    where: str
    revisions: list[tuple[str, str]]  # (revision, message), oldest first
    heads: tuple[str, ...]
    applied: set[str]
    problems: dict[str, checksums.Problem]
    drift: list[str] | None  # None: could not be checked
    drift_checked_on: str
    half_applied: dict[str, resume.HalfApplied]  # pending migrations a run left midway
    # A current revision whose file is missing, when no record says what ran before it:
    # which of the files on disk are applied cannot be known.
    unknown_behind: str | None = None
    # Contract revisions (``phase = "contract"``): ``make upgrade phase=expand`` stops before them.
    contracts: frozenset[str] = frozenset()

    @property
    def skipped(self) -> set[str]:
        """Below the current revision yet never applied here (a branch re-pointed after it ran)."""
        return {revision for revision, problem in self.problems.items() if problem.kind is Mismatch.SKIPPED}

    def lines(self) -> list[str]:
        out = [f"Migrations for {self.where}, oldest first:"]
        width = max((len(message) for _, message in self.revisions), default=0)
        for revision, message in self.revisions:
            if revision in self.skipped:
                note, mark = Mismatch.SKIPPED.value, "[!]"
            elif revision in self.applied:
                problem = self.problems.get(revision)
                note = problem.kind.value if problem else "checksum ok"
                mark = "[X]"
            elif self.unknown_behind:
                note, mark = "unknown", "[?]"
            elif revision in self.half_applied:
                done = self.half_applied[revision].units_done
                note, mark = f"half-applied ({done} of its steps committed; `make upgrade` resumes it)", "[~]"
            else:
                note, mark = "pending", "[ ]"
            if revision in self.contracts:
                note += ", contract"
            current = "  <- current" if revision in self.heads else ""
            out.append(f"{mark} {revision}  {message:<{width}}  {note}{current}")
        for head in self.heads:
            if head in self.problems and head not in dict(self.revisions):
                out.append(f"[X] {head}  (no such file)  FILE MISSING  <- current")
        out.append(self.summary())
        out += self.window()
        return out

    def window(self) -> list[str]:
        """The expand revisions whose contract is pending: the old and the new application may both run."""
        messages = dict(self.revisions)
        order = [revision for revision, _ in self.revisions]
        pending = [rev for rev in self.contracts if rev not in self.applied and rev in messages]
        between = [order[order.index(rev) - 1] for rev in pending if order.index(rev) > 0]
        return [
            f"Between expand and contract: {expand} ({messages[expand]}) is applied, its contract is not; "
            "the old and the new application version may both run. `make upgrade` contracts once no "
            "instance of the old version is left."
            for expand in between
            if expand in self.applied
        ]

    def summary(self) -> str:
        shown = {rev for rev, _ in self.revisions}
        pending = len(shown - self.applied - self.skipped)
        current = ", ".join(self.heads) or "none (empty database)"
        mismatched = len(self.problems) - len(self.skipped)
        checks = "all match" if not mismatched else f"{mismatched} problem(s), see `make verify`"
        if self.drift is None:
            models = f"unknown ({self.drift_checked_on}); run `make upgrade`, then `make check`"
        elif self.drift:
            models = f"DIFFER from migrations ({'; '.join(self.drift)}); run `make migration msg=...`"
        else:
            models = "in sync with migrations"
        if self.drift is not None:
            models += f" (checked on {self.drift_checked_on})"
        counts = f"{len(self.applied)} applied, {pending} pending"
        if self.skipped:
            counts += (
                f", {len(self.skipped)} SKIPPED ({', '.join(sorted(self.skipped))}: never applied here, "
                "though later ones were; `make upgrade` says the ways out)"
            )
        if self.unknown_behind:
            counts = (
                f"applied and pending unknown: the file of {self.unknown_behind}, the current revision, "
                "is missing and nothing records what ran before it"
            )
        return f"{counts}; current: {current}; checksums: {checks}; models: {models}."


def collect(config: Config, database: Target, compare: Drift) -> Status:
    """The view of ``database``; ``compare`` finds how the models (autogenerate's job, handed in)."""
    script = checksums.whole_history(config)
    heads: tuple[str, ...] = ()
    problems: list[checksums.Problem] = []
    record: dict[str, str] = {}
    half: dict[str, resume.HalfApplied] = {}
    drift: list[str] | None = None
    if database.exists(writes=False):
        with locked(database, writes=False) as connection:
            heads = tuple(MigrationContext.configure(connection).get_current_heads())
            squashes.adopt(script, heads, lambda: checksums.recorded(connection))  # the history it follows
            problems = checksums.problems(connection, script, heads)
            record = checksums.recorded(connection)
            half = {item.revision: item for item in resume.half_applied(connection)}
            skips = any(problem.kind is Mismatch.SKIPPED for problem in problems)
            if set(heads) == set(script.get_heads()) and not skips:  # a skip is not "in sync"
                drift = compare(connection)
    else:
        squashes.adopt(script, heads, dict)  # a new database would run the squash
    revision_map = script.revision_map
    walked = list(script.walk_revisions())
    revisions = [(rev.revision, rev.doc) for rev in reversed(walked)]
    contracts = frozenset(rev.revision for rev in walked if phases.of(rev) is Phase.CONTRACT)
    missing = [problem.revision for problem in problems if problem.kind is Mismatch.MISSING]
    unknown_behind = None
    if missing:
        # The history behind a missing file cannot be walked; the checksum records say what ran,
        # when they were kept as it was applied (each step records every applied revision).
        applied = set(heads) | set(record)
        unknown_behind = next((revision for revision in missing if revision not in record), None)
    else:
        applied = {rev.revision for rev in checksums.applied_revisions(revision_map, heads)}
        applied -= {problem.revision for problem in problems if problem.kind is Mismatch.SKIPPED}
    checked_on = "this database, at head"
    if drift is None:
        checked_on = "a scratch SQLite database migrated to head"
        try:
            with scratch.memory_engine().connect() as connection:
                scratch.upgrade(connection, script)
                drift = compare(connection)
        except Exception as exc:  # e.g. a migration written for PostgreSQL only
            drift = None
            reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0][
                :80
            ]
            checked_on = f"not checked: the migrations do not run on SQLite ({reason})"
    return Status(
        where=database.masked,
        revisions=revisions,
        heads=heads,
        applied=applied,
        problems={problem.revision: problem for problem in problems},
        drift=drift,
        drift_checked_on=checked_on,
        half_applied=half,
        unknown_behind=unknown_behind,
        contracts=contracts,
    )

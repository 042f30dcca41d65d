"""What differs between migration runs, decided by whoever starts the run.

env.py runs the same code for every command and reads these fields; it never
asks which command is running. Callers that set nothing (``alembic`` on the
command line, pytest-alembic, scripts) get the full safety net.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from dbtools.target import Target

KEY = "dbtools.run"


def _ask(question: str) -> bool:
    print(question, end="", flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


class Decisions(NamedTuple):
    """What the user said about renames (``dbtools.autogenerate.renames``): ``renames=``
    answers, and whether a terminal may be asked."""

    answers: tuple[str, ...] = ()
    ask: bool = False
    message: str = ""
    ask_one: Callable[[str], bool] = _ask


log = logging.getLogger(__name__)


class StepTimer:
    """How long each migration of a run took, and where the run took the database.

    Logged, kept for `make rehearse`, and read by a fleet's forked run
    (``dbtools.fleet.runner``) for its report's from and to, which it would
    otherwise open two more connections to read.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []  # (revision, seconds)
        self._mark = time.perf_counter()
        # The heads when the migrations started, under the migration lock, and after the last step.
        self.before: tuple[str, ...] = ()
        self.after: tuple[str, ...] = ()

    def start(self, heads: Collection[str]) -> None:
        """Called as the migrations start (again, when a run is retried): what was there first."""
        global _started
        self._mark = time.perf_counter()
        self.before = self.after = tuple(sorted(heads))
        _started = self

    def on_version_apply(
        self, ctx: MigrationContext, step: MigrationInfo, heads: Collection[str], run_args: Mapping[str, Any]
    ) -> None:
        now = time.perf_counter()
        elapsed, self._mark = now - self._mark, now
        self.after = tuple(sorted(heads))
        # Up or down, the migration that ran is the "up" side of the step.
        revision = ",".join(step.up_revision_ids)
        self.steps.append((revision, elapsed))
        log.info("%s %s took %.3f s", "Upgrade to" if step.is_upgrade else "Downgrade of", revision, elapsed)


# The timer of the last run that started migrating in this process (a fleet's forked run has one).
_started: StepTimer | None = None


def last_started() -> StepTimer | None:
    """The last run's timer in this process, if a run got as far as migrating since ``forget_started``."""
    return _started


def forget_started() -> None:
    """Before a run whose timer will be read: a forked process must not read its parent's."""
    global _started
    _started = None


@dataclass(frozen=True, eq=False)
class Run:
    """One run's options, set by whoever starts it; the defaults are the full safety net.

    A run compares by identity (it holds a live connection and its own timer). Every run imports
    this class: without a generated ``__eq__`` and ``__hash__``, and with a docstring (else the
    dataclass renders its signature into one), it costs a no-op run less (bench/).
    """

    # Migrate through this instead of opening the configured database
    # (make stamp and make rehearse hold the migration lock on it already).
    connection: Connection | Engine | None = None
    # Migrate, or render with --sql, this database instead of the configured one
    # (make lint renders PostgreSQL's SQL whatever DATABASE_URL says).
    target: Target | None = None
    # Load the models up front: autogenerate compares with them. Otherwise they
    # are loaded only if a guard needs them, which keeps a no-op upgrade cheap.
    needs_models: bool = True
    # May create a missing SQLite file. Commands that only look refuse instead.
    creates_database: bool = True
    # May apply or revert migrations: the applied history must be intact first.
    applies_migrations: bool = True
    # Compares the models with the database: it must be at the single head.
    autogenerates: bool = False
    # make migration: which renames the user accepted, and whether to ask (dbtools.autogenerate.renames).
    rename_decisions: Decisions | None = None
    # Autogenerate the online form of each change on PostgreSQL (dbtools.autogenerate.nonblocking);
    # off only for make bench-online's baseline, Alembic's own rendering.
    renders_online: bool = True
    # make downgrade, one step: a migration left half-applied above the revision is that step.
    reverts_half_applied: bool = False
    # make stamp: a schema without migration history is what is being adopted.
    adopting: bool = False
    # Copy a SQLite file before changing it (make rehearse works on a copy already).
    backs_up: bool = True
    # make upgrade out_of_order=1: run migrations the database skipped (a re-pointed branch)
    # below its current revision, when they touch other objects (dbtools.runtime.outoforder).
    out_of_order: bool = False
    # Each step's wall time, read by make rehearse.
    timer: StepTimer = field(default_factory=StepTimer)

    def start_with(self, config: Config) -> Config:
        config.attributes[KEY] = self
        return config


CONTEXT_KEY = "dbtools"


class InContext:
    """What env.py hands autogenerate's hooks through Alembic's migration context, as one typed value.

    Alembic passes ``context.configure()``'s extra keywords on in
    ``context.opts``; this is the only one the project adds (``CONTEXT_KEY``).
    """

    def __init__(
        self,
        *,
        project_root: Path | None = None,
        rename_decisions: Decisions | None = None,
        renders_online: bool = True,
    ) -> None:
        # Where autogenerate finds schema/ (dbtools.autogenerate.pgfacts).
        self.project_root = project_root
        # make migration: which renames the user accepted, and whether to ask.
        self.rename_decisions = rename_decisions
        # Online forms on PostgreSQL (off only for make bench-online's baseline).
        self.renders_online = renders_online
        # PostgreSQL's facts, loaded once by the first comparator that needs them
        # (a dbtools.autogenerate.pgfacts.PgFacts, or None when none could be seen).
        self.pg_facts: object = None
        self.facts_loaded = False


def in_context(context: MigrationContext) -> InContext:
    """The project's options in ``context``; defaults where env.py did not configure it (a scratch run).

    Never stored back: a context's opts may be a dict its caller shares (``hooks.COMPARE_OPTIONS``).
    """
    found = context.opts.get(CONTEXT_KEY)
    return found if isinstance(found, InContext) else InContext()


def moves_the_database(revision_argument: Callable[[], object]) -> bool:
    """Whether the Alembic command running env.py takes the database to a revision.

    ``revision_argument`` is env.py's ``context.get_revision_argument``: ``upgrade``,
    ``downgrade`` and ``stamp`` name a destination; ``current``, ``check`` and
    ``revision``, commands that only look, name none, and Alembic's lookup raises
    ``KeyError``. Only the former may create a missing SQLite file, whoever runs them.
    """
    try:
        revision_argument()
    except KeyError:
        return False
    except CommandError:
        return True  # a destination Alembic cannot resolve: the run refuses it in its own words
    return True


def of(config: Config) -> Run:
    """This run's options; a connection in ``attributes["connection"]`` counts too.

    That key is Alembic's cookbook recipe for sharing a connection, and how
    pytest-alembic hands its engine to env.py. A run handed a connection
    works on that connection's database, whatever DATABASE_URL says.
    """
    from dbtools.target import Target

    shared = config.attributes.get("connection")
    # Plain `alembic` from a shell loads the models only when it compares (env.py): a no-op
    # `alembic upgrade` then costs what a bare Alembic project's does. A program handing in
    # its connection (pytest-alembic, Alembic's cookbook) may read target_metadata, so it
    # gets the models' MetaData, as Alembic's docs promise.
    run = config.attributes.get(KEY) or Run(needs_models=shared is not None)
    if run.connection is None and shared is not None:
        run = replace(run, connection=shared)
    if run.target is None and run.connection is not None:
        url = run.connection.url if isinstance(run.connection, Engine) else run.connection.engine.url
        run = replace(run, target=Target.of(url))
    return run

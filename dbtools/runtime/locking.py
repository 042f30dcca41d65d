"""One migration run at a time, per database (per tenant schema), with bounded waits on PostgreSQL.

SQLite: the engine opens every transaction with ``BEGIN IMMEDIATE`` (see
``Target.engine``), which takes the database's write lock and waits up
to ``MIGRATION_LOCK_TIMEOUT`` for it.

PostgreSQL: a *session-level* advisory lock, taken before the current revision
is read and released when the run ends (or by the server when the connection
dies). Its key is the database's for the default schema, and one per tenant
schema (``MIGRATION_SCHEMA``, ``lock_key``): each schema holds its own
``alembic_version``, so tenants of one database migrate side by side, and two
runs on one schema still queue. A transaction-level lock would not do: the COMMIT inside an
``autocommit_block()`` releases it, and the ``SET LOCAL`` timeouts with it, so
a second run could start halfway through the first. Every transaction the run
begins, including the one after such a block, gets its timeouts set again:

- ``lock_timeout`` = ``MIGRATION_DDL_LOCK_TIMEOUT``: an ALTER queued behind a
  long query blocks every query queued behind it, so it gives up early, and the
  run is rolled back and retried (``Session.attempts``). In a transaction it is
  capped just under a shorter ``MIGRATION_STATEMENT_TIMEOUT``, so that a lock
  wait always ends as a lock timeout, retried, never as a statement timeout
  (``settings.lock_wait_milliseconds``);
- ``statement_timeout`` = ``MIGRATION_STATEMENT_TIMEOUT`` in transactions, and
  none inside ``autocommit_block()``: an online step such as ``CREATE INDEX
  CONCURRENTLY`` blocks no reads or writes, may rightly take hours, and
  cancelled it leaves an INVALID index behind.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError

from dbtools import settings
from dbtools.errors import (
    LOCK_NOT_AVAILABLE,
    Interrupted,
    first_line,
    friendly_errors,
    lock_wait_exceeded,
    lock_wait_named,
    longer_lock_wait,
    sqlstate,
)
from dbtools.runtime.lockkeys import lock_key
from dbtools.settings import (
    LOCK_RETRIES_VAR,
    LOCK_TIMEOUT_VAR,
    lock_retries,
    lock_timeout,
    lock_wait_milliseconds,
    milliseconds,
    statement_timeout,
)
from dbtools.target import Target

COMMITTED_MIDWAY = (
    "a non-transactional step (autocommit_block) had already committed, so what ran before it stays "
    "applied: `make current` shows the revision reached, and `make upgrade` resumes from there"
)
# Backoff between attempts: doubling from about a second, never above half a minute.
FIRST_DELAY, MAX_DELAY = 1.0, 30.0
# Longest single wait for the migration lock (see _acquire); well under deadlock_timeout's 1 s.
SLICE = 0.1

log = logging.getLogger(__name__)


def timeouts(*, online_step: bool) -> dict[str, str]:
    """The PostgreSQL settings a migration statement runs under."""
    limit = 0.0 if online_step else statement_timeout()
    return {
        "lock_timeout": f"{lock_wait_milliseconds(online_step=online_step)}ms",
        "statement_timeout": f"{milliseconds(limit)}ms" if limit else "0",
    }


def backfill_settings() -> dict[str, str]:
    """The session settings an expand revision's backfill reads: its batch size and pause."""
    return {
        "dbtools.backfill_batch": str(settings.backfill_batch()),
        "dbtools.backfill_pause": str(settings.backfill_pause()),
    }


def offline_prelude(starting: tuple[str, ...], version_table: str, schema: str | None = None) -> list[str]:
    """What ``make sql`` prints first for PostgreSQL, so SQL applied by hand runs as a run does.

    The migration lock, then a check that the database is still at
    ``starting``, the revisions the script was printed from (none: from an
    empty database), as a run reads the current revision only once it holds
    the lock. Without it, a script applied twice, or after a ``make upgrade``
    that got there first, would run its data steps again: Alembic's ``UPDATE
    alembic_version ... WHERE version_num = '<start>'`` matches no row without
    an error. Session settings, not ``SET LOCAL``: the script's own COMMITs
    (one per ``autocommit_block()``) must not drop them.
    """
    return [
        f"SET lock_timeout = '{milliseconds(lock_timeout())}ms'",
        f"SELECT pg_advisory_lock({lock_key(schema)})",
        _starts_at(starting, version_table, schema),
        *(f"SET {name} = '{value}'" for name, value in timeouts(online_step=False).items()),
    ]


def offline_blocks(context: MigrationContext) -> None:
    """``make sql``: inside each ``autocommit_block()``, the timeouts of an online step, as a run has them.

    The prelude's settings are session settings (the block's COMMIT must not
    drop them), so without this the script's ``statement_timeout`` would also
    bound a ``CREATE INDEX CONCURRENTLY``, and a lock timeout capped under it
    would apply there too. The block's statements run after Alembic's COMMIT,
    under the online step's settings; the transaction's come back before the
    BEGIN after it. Nothing is printed where the two agree (no statement
    timeout). The connected run does the same in ``Session._on_begin``; the
    run's own wrapper of this method (``resume.install``) is for connected
    runs only, and this one wraps whatever the context has, so both compose.
    """
    if not context.as_sql or context.dialect.name != "postgresql":
        return
    transaction, online = timeouts(online_step=False), timeouts(online_step=True)
    changed = [name for name in transaction if transaction[name] != online[name]]
    if not changed:
        return
    block = context.autocommit_block

    @contextmanager
    def with_online_timeouts() -> Iterator[None]:
        with block():
            for name in changed:
                context.execute(f"SET {name} = '{online[name]}'")
            yield
            for name in changed:
                context.execute(f"SET {name} = '{transaction[name]}'")

    context.autocommit_block = with_online_timeouts  # type: ignore[method-assign]


def _starts_at(starting: tuple[str, ...], version_table: str, schema: str | None) -> str:
    """A DO block that raises unless the database is at ``starting`` (psql's ON_ERROR_STOP then stops).

    From base, Alembic's script creates the version table, so it must not exist
    yet. The text goes through ``sqlalchemy.text()``, so no colon may come
    before a word (it would be a bind parameter).
    """
    table = f"quote_ident({_quoted(version_table)})"
    if schema:
        table = f"quote_ident({_quoted(schema)}) || '.' || {table}"
    if starting:
        start = f"revision {', '.join(starting)}"
        elsewhere = f"NOT coalesce(applied @> ARRAY[{', '.join(map(_quoted, starting))}], false)"
    else:
        start, elsewhere = "an empty database (no alembic_version table)", "applied IS NOT NULL"
    return f"""DO $$
DECLARE
    version_table text = {table};
    applied text[];
    here text;
BEGIN
    IF to_regclass(version_table) IS NOT NULL THEN
        EXECUTE 'SELECT coalesce(array_agg(CAST(version_num AS text) ORDER BY version_num), ''{{}}'') FROM '
            || version_table INTO applied;
    END IF;
    IF {elsewhere} THEN
        here = CASE WHEN applied IS NULL THEN 'no revision (no alembic_version table)'
            WHEN applied = '{{}}' THEN 'no revision (an empty alembic_version table)'
            ELSE 'revision ' || array_to_string(applied, ', ') END;
        RAISE EXCEPTION
            'this make sql script starts at {_escaped(start)}, but the database is at %; nothing was run',
            here
            USING HINT = 'It was applied already, or another run got there first. make current shows '
                || 'where the database is, and make sql rev=<that revision>:<target> prints a script '
                || 'from there.';
    END IF;
END
$$"""


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _escaped(value: str) -> str:
    """``value`` inside a literal of a RAISE format: quotes doubled, ``%`` not a placeholder."""
    return value.replace("'", "''").replace("%", "%%")


def offline_epilogue(schema: str | None = None) -> list[str]:
    return [
        f"SELECT pg_advisory_unlock({lock_key(schema)})",
        "RESET lock_timeout",
        "RESET statement_timeout",
    ]


class Session:
    """The migration lock held on one connection, for one run.

    A plain class, as ``Attempt``: every run makes one, and a dataclass costs
    a no-op run its generated methods' compile at import (bench/).
    """

    def __init__(self, connection: Connection, postgresql: bool, *, owns_transactions: bool) -> None:
        self.connection = connection
        self.postgresql = postgresql
        # A connection handed in already inside a transaction (make stamp, make
        # rehearse): that transaction is its owner's, so a run never retries it.
        self.owns_transactions = owns_transactions
        # Set when a transaction commits during an attempt: an autocommit_block()
        # made changes that a rollback no longer undoes.
        self.committed = False
        # Whether the last statement that failed ran inside an autocommit_block(), where no
        # statement timeout caps the lock timeout: which lock timeout its FAILED line names.
        self.failed_online = False

    def attempts(self) -> Iterator[Attempt]:
        """``for attempt in session.attempts(): with attempt: <the run>``, tenacity-style.

        On PostgreSQL, a run that hit the DDL lock timeout was rolled back
        whole: it is run again after a backoff, ``MIGRATION_LOCK_RETRIES`` times.
        """
        retries = lock_retries() if self.postgresql and self.owns_transactions else 0
        for number in range(retries + 1):
            attempt = Attempt(self, number, retries)
            yield attempt
            if attempt.succeeded:
                return
            delay = min(MAX_DELAY, FIRST_DELAY * 2**number) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)
            log.warning(
                "attempt %d of %d waited longer than %s for a table lock; rolled back, retrying in %.1fs",
                number + 1,
                retries + 1,
                lock_wait_named(),  # an attempt retried was rolled back whole: it waited in a transaction
                delay,
            )
            time.sleep(delay)

    def _on_begin(self, connection: Connection) -> None:
        # Alembic's autocommit_block() switches the connection to AUTOCOMMIT, then begins.
        online_step = connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        backfill = backfill_settings() if online_step else {}  # read by a backfill's DO block
        _apply(connection, {**timeouts(online_step=online_step), **backfill}, local=not online_step)

    def _on_commit(self, _connection: Connection) -> None:
        self.committed = True

    def _on_error(self, context: ExceptionContext) -> None:
        if context.connection is self.connection:
            options = self.connection.get_execution_options()
            self.failed_online = options.get("isolation_level") == "AUTOCOMMIT"


class Attempt:
    """One try at the run; swallows a lock timeout that may be retried."""

    def __init__(self, session: Session, number: int, retries: int) -> None:
        self.session, self.number, self.retries = session, number, retries
        self.succeeded = False

    def __enter__(self) -> None:
        self.session.committed = False

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        if exc is None:
            self.succeeded = True
            return False
        if self.session.committed:
            if _interrupted(exc):  # Ctrl-C; SQLAlchemy may report the dead transaction over it
                raise Interrupted(COMMITTED_MIDWAY) from None
            cause = _database_error(exc)
            if cause is not None:
                raise CommandError(_after_commit(cause, online_step=self.session.failed_online)) from None
            exc.add_note(f"{COMMITTED_MIDWAY[0].upper()}{COMMITTED_MIDWAY[1:]}.")
            return False
        if not (isinstance(exc, OperationalError) and sqlstate(exc) == LOCK_NOT_AVAILABLE):
            return False
        if self.number < self.retries:
            return True
        if not self.session.owns_transactions:
            return False  # its owner rolls back; dberrors says why
        raise CommandError(
            f"{lock_wait_exceeded()}, in each of {self.retries + 1} attempt(s) "
            f"({LOCK_RETRIES_VAR}={self.retries}); nothing was changed. Retry when traffic is lower, "
            f"or raise {longer_lock_wait()} or {LOCK_RETRIES_VAR}"
        ) from None


def _interrupted(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False


def _database_error(exc: BaseException | None) -> DBAPIError | None:
    """The database's error under ``exc``: a connection ended inside an autocommit_block() (an
    operator's pg_terminate_backend) surfaces as SQLAlchemy's PendingRollbackError, raised over it
    when Alembic's block ends."""
    while exc is not None:
        if isinstance(exc, DBAPIError):
            return exc
        exc = exc.__context__
    return None


def _after_commit(exc: DBAPIError, *, online_step: bool) -> str:
    detail = first_line(exc)
    retry = ""
    if sqlstate(exc) == LOCK_NOT_AVAILABLE:
        retry = f" ({lock_wait_named(online_step=online_step)}; such a run is not retried automatically)"
    return f"the run failed: {detail}{retry}{_duplicates(exc)}; {COMMITTED_MIDWAY}, once the cause is fixed"


# SQLSTATE unique_violation, and the statement of an online unique build (the generated form:
# DROP INDEX CONCURRENTLY IF EXISTS, then this), which leaves an INVALID index when it fails.
UNIQUE_VIOLATION = "23505"
# A pattern, compiled on first use (re caches it): only a failed run needs it.
UNIQUE_BUILD = r"(?i)^\s*CREATE\s+UNIQUE\s+INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(\S+)"


def _duplicates(exc: DBAPIError) -> str:
    """Which key is duplicated (PostgreSQL's DETAIL), and the INVALID index a failed unique build left.

    The password is scrubbed on the way out (``dbtools.errors.friendly_errors``).
    """
    if sqlstate(exc) != UNIQUE_VIOLATION:
        return ""
    diag = getattr(exc.orig, "diag", None)
    key = " ".join(str(getattr(diag, "message_detail", None) or "").split())
    said = f" ({key[:300]}{'...' if len(key) > 300 else ''})" if key else ""
    build = re.match(UNIQUE_BUILD, str(exc.statement or ""))
    if build is None:
        return said
    index = getattr(diag, "constraint_name", None) or build[1].strip('"')
    return (
        f"{said}: the build left the index {index} INVALID, which the next `make upgrade` drops and builds "
        "again once the duplicates are fixed"
    )


def _apply(connection: Connection, settings: dict[str, str], *, local: bool) -> None:
    calls = ", ".join(
        f"set_config('{name}', '{value}', {str(local).lower()})" for name, value in settings.items()
    )
    connection.exec_driver_sql(f"SELECT {calls}")


@contextmanager
def held(connection: Connection, schema: str | None = None) -> Iterator[Session]:
    """Hold the migration lock of ``schema`` (None: the default one) on ``connection`` until the block ends.

    A connection already in a transaction takes the lock inside it; otherwise
    the lock is taken in a short transaction of its own, so the run's own
    transactions begin after it.
    """
    postgresql = connection.dialect.name == "postgresql"
    session = Session(connection, postgresql, owns_transactions=not connection.in_transaction())
    if not postgresql:
        yield session
        return
    key = lock_key(schema)
    _acquire(connection, key)
    if not session.owns_transactions:
        _apply(connection, timeouts(online_step=False), local=True)
    event.listen(connection, "begin", session._on_begin)
    event.listen(connection, "commit", session._on_commit)
    event.listen(connection.engine, "handle_error", session._on_error)  # an engine's event
    from dbtools.runtime import backfill  # PostgreSQL only: not imported by a SQLite run

    try:
        with backfill.shown(connection.connection.dbapi_connection):  # an expand's backfill, as it goes
            yield session
    finally:
        event.remove(connection, "begin", session._on_begin)
        event.remove(connection, "commit", session._on_commit)
        event.remove(connection.engine, "handle_error", session._on_error)
        _release(connection, schema)


def _acquire(connection: Connection, key: int) -> None:
    """Queue for the lock in slices of at most ``SLICE`` seconds, each its own transaction.

    A session blocked in ``pg_advisory_lock`` holds a snapshot while it waits,
    and ``CREATE INDEX CONCURRENTLY`` waits for every older snapshot to end: a
    run queued for the whole wait would deadlock with the running migration
    (measured). A slice ends before the deadlock detector's first check, and
    the next one begins with a newer snapshot, which the build does not wait for.
    """
    wait = lock_timeout()
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        try:
            if connection.in_transaction():  # its owner's transaction: wait inside it
                _try_lock(connection, key, left)
            else:
                with connection.begin():
                    _try_lock(connection, key, min(SLICE, left))
            return
        except OperationalError as exc:
            if sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            if deadline - time.monotonic() <= 0 or connection.in_transaction():
                raise CommandError(
                    f"another migration run held the migration lock for longer than "
                    f"{LOCK_TIMEOUT_VAR}={wait:g}s; nothing was changed. Wait for it to finish, "
                    f"or raise {LOCK_TIMEOUT_VAR}"
                ) from None


def _try_lock(connection: Connection, key: int, seconds: float) -> None:
    _apply(connection, {"lock_timeout": f"{milliseconds(seconds)}ms"}, local=True)
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({key})")


def _release(connection: Connection, schema: str | None) -> None:
    """Unlock, and undo session settings an autocommit_block() made; a dead connection unlocked already."""
    if connection.closed or connection.invalidated:
        return
    try:
        if connection.in_transaction():  # its owner's transaction, whose SET LOCALs end with it
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({lock_key(schema)})")
            return
        with connection.begin():
            for statement in offline_epilogue(schema):
                connection.exec_driver_sql(statement)
    except DBAPIError:
        log.debug("could not release the migration lock; the server releases it with the connection")


@contextmanager
def locked(target: Target, *, commit: bool = True, writes: bool = True) -> Iterator[Connection]:
    """A transaction on ``target`` holding the migration lock, for commands beside Alembic's.

    ``commit=False`` rolls everything back at the end, as ``make rehearse`` needs.
    ``writes=False`` only reads: on SQLite a snapshot without the write lock,
    which also works on a read-only file.
    """
    engine = target.engine(writes=writes)
    try:
        with friendly_errors(target), engine.connect() as connection, held(connection, target.schema):
            transaction = connection.begin()
            try:
                yield connection
            except BaseException:
                transaction.rollback()
                raise
            if commit:
                transaction.commit()
            else:
                transaction.rollback()
    finally:
        engine.dispose()

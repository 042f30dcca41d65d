"""One migration run at a time, per database.

SQLite: the engine opens every transaction with ``BEGIN IMMEDIATE`` (see
``database.build_engine``), which takes the database's write lock and waits up
to ``MIGRATION_LOCK_TIMEOUT`` for it. PostgreSQL: a transaction-level advisory
lock, so it is held for the whole run and released by commit, rollback or a
dropped connection, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError

from dbtools.database import build_engine
from dbtools.dberrors import friendly_errors
from dbtools.settings import LOCK_TIMEOUT_VAR, ddl_lock_timeout, lock_timeout, milliseconds

# pg_advisory_xact_lock key shared by every migration run on a database.
# Fixed forever: runs of different versions of this project must exclude each other.
ADVISORY_LOCK_KEY = 7_362_410_518_202_611


def acquire(connection: Connection) -> None:
    """Wait for the migration lock, then bound how long each statement queues."""
    if connection.dialect.name != "postgresql":
        return
    wait = lock_timeout()
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{milliseconds(wait)}ms'")
    try:
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":
            raise CommandError(
                f"another migration run held the migration lock for longer than "
                f"{LOCK_TIMEOUT_VAR}={wait:g}s; nothing was changed. Wait for it to finish, "
                f"or raise {LOCK_TIMEOUT_VAR}"
            ) from None
        raise
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{milliseconds(ddl_lock_timeout())}ms'")


@contextmanager
def locked(url: URL, *, commit: bool = True, writes: bool = True) -> Iterator[Connection]:
    """A transaction on ``url`` holding the migration lock, for commands beside Alembic's.

    ``commit=False`` rolls everything back at the end, as ``make rehearse`` needs.
    ``writes=False`` only reads: on SQLite a snapshot without the write lock,
    which also works on a read-only file.
    """
    engine = build_engine(url, writes=writes)
    try:
        with friendly_errors(url), engine.connect() as connection:
            transaction = connection.begin()
            try:
                acquire(connection)
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

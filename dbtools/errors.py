"""Turn the database failures a user can fix into one ``FAILED:`` line.

Anything not recognised here propagates with its traceback: that is a bug in
a migration, and its author needs the line number. Either way the run's
single transaction is rolled back, so the database is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from dbtools.settings import (
    DDL_LOCK_TIMEOUT_VAR,
    LOCK_TIMEOUT_VAR,
    STATEMENT_TIMEOUT_VAR,
    ddl_lock_timeout,
    lock_timeout,
    statement_timeout,
)
from dbtools.target import mask, scrub, sqlite_path

UNCHANGED = "nothing was changed"


@contextmanager
def friendly_errors(url: URL) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        message = describe(exc, url)
        if message is None:
            raise
        raise CommandError(scrub(message, url)) from None


def describe(exc: DBAPIError, url: URL) -> str | None:
    detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    if url.get_backend_name() == "sqlite":
        return _describe_sqlite(detail, url)
    if url.get_backend_name() == "postgresql":
        return _describe_postgresql(exc, detail, url)
    return None


def _describe_sqlite(detail: str, url: URL) -> str | None:
    where = str(sqlite_path(url) or mask(url))
    if "database is locked" in detail:
        return (
            f"{where} stayed locked by another writer for longer than "
            f"{LOCK_TIMEOUT_VAR}={lock_timeout():g}s; {UNCHANGED}. "
            f"Retry when it is done, or raise {LOCK_TIMEOUT_VAR}"
        )
    if "readonly database" in detail:
        return f"{where} is read-only; {UNCHANGED}. Make the file and its directory writable"
    if "file is not a database" in detail:
        return f"{where} is not a SQLite database; {UNCHANGED}. Point DATABASE_URL at the right file"
    if "database or disk is full" in detail:
        return f"the disk holding {where} is full; {UNCHANGED}. Free some space, then run again"
    if "unable to open database file" in detail:
        return f"cannot open the SQLite database {where}; check that its directory exists and is writable"
    return None


def _describe_postgresql(exc: DBAPIError, detail: str, url: URL) -> str | None:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate == "55P03":
        return (
            f"a migration statement waited longer than {DDL_LOCK_TIMEOUT_VAR}="
            f"{ddl_lock_timeout():g}s for a table lock held by other sessions; {UNCHANGED}. "
            f"Retry when traffic is lower, or raise {DDL_LOCK_TIMEOUT_VAR}"
        )
    if sqlstate == "57014" and "statement timeout" in detail:
        return (
            f"a migration statement ran longer than {STATEMENT_TIMEOUT_VAR}={statement_timeout():g}s "
            f"and was cancelled; {UNCHANGED}. Raise {STATEMENT_TIMEOUT_VAR} (0 is no limit) if the "
            "step needs longer, or make the step cheaper"
        )
    if sqlstate == "57014":
        return f"another session cancelled a migration statement ({detail}); {UNCHANGED}. Run again"
    if sqlstate == "42501":
        return (
            f"the role {url.username!r} lacks a privilege the migration needs ({detail}); {UNCHANGED}. "
            "Since PostgreSQL 15 only the database owner may create in schema public: run as the "
            f"owner, or GRANT CREATE ON SCHEMA public TO {url.username}"
        )
    if sqlstate in ("57P01", "57P02", "57P03") or (sqlstate is None and "closed the connection" in detail):
        return (
            f"the server at {mask(url)} ended the connection during the run ({detail}); it rolls back "
            f"an unfinished transaction, so {UNCHANGED}. Run again once the server is back"
        )
    if sqlstate in ("28P01", "28000") or "authentication failed" in detail:
        return f"the server at {mask(url)} refused the login; check the user and password in DATABASE_URL"
    if sqlstate == "3D000" or (sqlstate is None and "does not exist" in detail):
        return f"the server at {mask(url)} has no database {url.database!r}; create it first (createdb)"
    if sqlstate is None:
        # No SQLSTATE: the driver never got an answer from a server.
        return (
            f"cannot reach the database at {mask(url)} ({detail}); "
            "check the host and port, and that the server is running"
        )
    return None

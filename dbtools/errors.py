"""Turn the database failures a user can fix into one ``FAILED:`` line.

Anything not recognised here propagates with its traceback: that is a bug in
a migration, and its author needs the line number. Either way the run's
single transaction is rolled back, so the database is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from dbtools.settings import (
    DDL_LOCK_TIMEOUT_VAR,
    LOCK_TIMEOUT_VAR,
    STATEMENT_TIMEOUT_VAR,
    ddl_lock_timeout,
    lock_timeout,
    lock_wait_milliseconds,
    milliseconds,
    statement_timeout,
)
from dbtools.target import Backend, Target

UNCHANGED = "nothing was changed"
# SQLSTATE of a plain RAISE EXCEPTION: a migration stopping itself, with a message for whoever runs it
# (the checks before an enum type is replaced, dbtools.autogenerate.portable.EnumValuesOp).
RAISED = "P0001"
# SQLSTATE of a statement that gave up waiting for a lock (lock_timeout).
LOCK_NOT_AVAILABLE = "55P03"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised through every ``with`` block, saying what had been committed before it.

    Each open transaction was rolled back; ``committed`` says what an
    ``autocommit_block()`` had committed before (empty: nothing).
    """

    def __init__(self, committed: str = "") -> None:
        super().__init__(committed)
        self.committed = committed


@contextmanager
def friendly_errors(target: Target) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        message = describe(exc, target)
        if message is None:
            raise
        raise CommandError(target.scrub(message)) from None
    except CommandError as exc:  # one made inside the run may quote the driver (runtime.locking)
        if target.scrub(str(exc)) == str(exc):
            raise
        raise CommandError(target.scrub(str(exc))) from None


def first_line(exc: DBAPIError) -> str:
    """The driver's message, first line only; its type's name when it says nothing."""
    text = str(exc.orig).strip()
    return text.splitlines()[0] if text else type(exc.orig).__name__


def sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def lock_wait_named(*, online_step: bool = False) -> str:
    """The lock timeout that applied to a statement, as every message names it.

    ``MIGRATION_DDL_LOCK_TIMEOUT``, or the value a shorter ``MIGRATION_STATEMENT_TIMEOUT``
    capped it to in a transaction (``settings.lock_wait_milliseconds``).
    """
    ddl = f"{DDL_LOCK_TIMEOUT_VAR}={ddl_lock_timeout():g}s"
    applied = lock_wait_milliseconds(online_step=online_step)
    if applied == milliseconds(ddl_lock_timeout()):
        return ddl
    return f"{applied / 1000:g}s ({ddl}, capped just under {STATEMENT_TIMEOUT_VAR}={statement_timeout():g}s)"


def longer_lock_wait(*, online_step: bool = False) -> str:
    """The setting to raise for a longer lock wait: the statement timeout, while it caps the wait."""
    if lock_wait_milliseconds(online_step=online_step) == milliseconds(ddl_lock_timeout()):
        return DDL_LOCK_TIMEOUT_VAR
    return f"{STATEMENT_TIMEOUT_VAR} (which caps the lock wait) and {DDL_LOCK_TIMEOUT_VAR}"


def lock_wait_exceeded(*, online_step: bool = False) -> str:
    """Why a statement failed with 55P03, in the words every message uses."""
    return (
        f"a migration statement waited longer than {lock_wait_named(online_step=online_step)} "
        "for a table lock held by other sessions"
    )


def describe(exc: DBAPIError, target: Target) -> str | None:
    if target.backend is Backend.SQLITE:
        return _describe_sqlite(exc, target)
    if target.backend is Backend.POSTGRESQL:
        return _describe_postgresql(exc, first_line(exc), target)
    return None


def _describe_sqlite(exc: DBAPIError, target: Target) -> str | None:
    # The primary result code; extended ones (SQLITE_READONLY_DIRECTORY, ...) start with it.
    code = str(getattr(exc.orig, "sqlite_errorname", ""))
    where = target.where
    if code.startswith("SQLITE_BUSY"):
        return (
            f"{where} stayed locked by another writer for longer than "
            f"{LOCK_TIMEOUT_VAR}={lock_timeout():g}s; {UNCHANGED}. "
            f"Retry when it is done, or raise {LOCK_TIMEOUT_VAR}"
        )
    if code.startswith("SQLITE_READONLY"):
        return f"{where} is read-only; {UNCHANGED}. Make the file and its directory writable"
    if code.startswith("SQLITE_NOTADB"):
        return f"{where} is not a SQLite database; {UNCHANGED}. Point DATABASE_URL at the right file"
    if code.startswith("SQLITE_FULL"):
        return f"the disk holding {where} is full; {UNCHANGED}. Free some space, then run again"
    if code.startswith("SQLITE_CANTOPEN"):
        return f"cannot open the SQLite database {where}; check that its directory exists and is writable"
    return None


def _describe_postgresql(exc: DBAPIError, detail: str, target: Target) -> str | None:
    state = sqlstate(exc)
    masked, url = target.masked, target.url
    if state == LOCK_NOT_AVAILABLE:
        retry = f"Retry when traffic is lower, or raise {longer_lock_wait()}"
        return f"{lock_wait_exceeded()}; {UNCHANGED}. {retry}"
    if state == RAISED:
        hint = getattr(getattr(exc.orig, "diag", None), "message_hint", None)
        return f"{detail}; {UNCHANGED}" + (f". {hint}" if hint else "")
    if state == "57014" and "statement timeout" in detail:
        return (
            f"a migration statement ran longer than {STATEMENT_TIMEOUT_VAR}={statement_timeout():g}s "
            f"and was cancelled; {UNCHANGED}. Raise {STATEMENT_TIMEOUT_VAR} (0 is no limit) if the "
            "step needs longer, or make the step cheaper"
        )
    if state == "57014":
        return f"another session cancelled a migration statement ({detail}); {UNCHANGED}. Run again"
    if state == "42501":
        return _insufficient_privilege(detail, str(url.username))
    if state in ("57P01", "57P02", "57P03") or (state is None and "closed the connection" in detail):
        return (
            f"the server at {masked} ended the connection during the run ({detail}); it rolls back "
            f"an unfinished transaction, so {UNCHANGED}. Run again once the server is back"
        )
    if state in ("28P01", "28000") or "authentication failed" in detail:
        return f"the server at {masked} refused the login; check the user and password in DATABASE_URL"
    if state == "3D000" or (state is None and "does not exist" in detail):
        return f"the server at {masked} has no database {url.database!r}; create it first (createdb)"
    if state is None:
        # No SQLSTATE: the driver never got an answer from a server.
        return (
            f"cannot reach the database at {masked} ({detail}); "
            "check the host and port, and that the server is running"
        )
    return None


# PostgreSQL's 42501 messages: an object only its owner may alter, and a schema the role may not use.
# Patterns, compiled on first use (re caches them): every run imports this module, few fail.
NOT_OWNER = r"^must be owner of (?P<kind>[a-z ]+?) (?P<name>\S.*)$"
SCHEMA_DENIED = r"^permission denied for schema (?P<name>\S.*)$"
# The ALTER ... OWNER TO for each kind of object a migration may alter; an index follows its table.
OWNER_TO = {
    "table": "TABLE",
    "relation": "TABLE",
    "sequence": "SEQUENCE",
    "view": "VIEW",
    "materialized view": "MATERIALIZED VIEW",
    "type": "TYPE",
    "schema": "SCHEMA",
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
}


def _insufficient_privilege(detail: str, role: str) -> str:
    """What the role lacks (SQLSTATE 42501), and what gives it: ownership is not a grant."""
    lacks = f"the role {role!r} lacks a privilege the migration needs ({detail}); {UNCHANGED}"
    owner = re.match(NOT_OWNER, detail)
    if owner:
        kind, name = owner["kind"], owner["name"]
        if kind == "index":
            fix = f"run the migration as the owner of the table of index {name}, which owns the index"
        else:
            fix = f"run the migration as the owner of {name}"
            if kind in OWNER_TO:
                fix += (
                    f", or have its owner (or a superuser) run ALTER {OWNER_TO[kind]} {name} OWNER TO {role}"
                )
        return (
            f"the role {role!r} does not own the {kind} {name}, which the migration changes ({detail}); "
            f"{UNCHANGED}. Only the owner may alter it, whatever is granted on it or on its schema: {fix}"
        )
    schema = re.match(SCHEMA_DENIED, detail)
    if schema and schema["name"] == "public":  # USAGE on public is everyone's by default
        return (
            f"{lacks}. Since PostgreSQL 15 only the database owner may create in schema public: "
            f"run as the owner, or GRANT CREATE ON SCHEMA public TO {role}"
        )
    if schema:
        return f"{lacks}. Run as the owner, or GRANT USAGE, CREATE ON SCHEMA {schema['name']} TO {role}"
    return f"{lacks}. Run as a role that has it, or GRANT it to {role}"

"""Tunables read from the environment, validated once, with safe defaults.

Standard library only until a value is refused: the no-op fast path keys its
record on ``NAMES`` before SQLAlchemy or Alembic is imported.
"""

from __future__ import annotations

import math
import os

DATABASE_URL_VAR = "DATABASE_URL"
LOCK_TIMEOUT_VAR = "MIGRATION_LOCK_TIMEOUT"
BACKUP_KEEP_VAR = "MIGRATION_BACKUP_KEEP"
DDL_LOCK_TIMEOUT_VAR = "MIGRATION_DDL_LOCK_TIMEOUT"
LOCK_RETRIES_VAR = "MIGRATION_LOCK_RETRIES"
STATEMENT_TIMEOUT_VAR = "MIGRATION_STATEMENT_TIMEOUT"
BACKENDS_VAR = "MIGRATION_BACKENDS"
SCHEMA_VAR = "MIGRATION_SCHEMA"
BACKFILL_BATCH_VAR = "MIGRATION_BACKFILL_BATCH"
BACKFILL_PAUSE_VAR = "MIGRATION_BACKFILL_PAUSE"
MAX_RETRIES = 100
# Everything in the environment a migration run reads: a change may mean another answer.
NAMES = (
    DATABASE_URL_VAR,
    LOCK_TIMEOUT_VAR,
    DDL_LOCK_TIMEOUT_VAR,
    LOCK_RETRIES_VAR,
    STATEMENT_TIMEOUT_VAR,
    BACKUP_KEEP_VAR,
    BACKENDS_VAR,
    SCHEMA_VAR,
    BACKFILL_BATCH_VAR,
    BACKFILL_PAUSE_VAR,
)


# PostgreSQL's timeouts are whole milliseconds in an int: about 24.8 days at most.
MAX_SECONDS = 2_147_483


def _refuse(message: str) -> Exception:
    from alembic.util import CommandError

    return CommandError(message)


def seconds(name: str, default: float, *, zero_means: str = "") -> float:
    """Environment variable ``name`` as seconds: positive and honourable by PostgreSQL; ``default`` unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value == 0 and zero_means:
        return 0.0
    if not 0 < value <= MAX_SECONDS:  # also refuses nan and inf
        allowed = f"a positive number of seconds (at most {MAX_SECONDS:,})"
        if zero_means:
            allowed = f"0 ({zero_means}) or {allowed}"
        raise _refuse(f"{name}={raw!r} is not {allowed}; fix or unset it")
    return value


def _count(name: str, default: int, *, most: int, zero_means: str) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    # isdigit() alone accepts "²", which int() then rejects with a traceback.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > most:
        raise _refuse(
            f"{name}={raw!r} is not a whole number from 0 ({zero_means}) to {most}; fix or unset it"
        )
    return int(raw)


def milliseconds(seconds: float) -> int:
    """For PostgreSQL, where 0 means "wait forever": a positive wait never rounds down to it."""
    return max(1, math.ceil(seconds * 1000))


def lock_timeout() -> float:
    """How long a run waits for another migration run to finish."""
    return seconds(LOCK_TIMEOUT_VAR, 60.0)


def ddl_lock_timeout() -> float:
    """How long one PostgreSQL statement may queue for a table lock.

    Short on purpose: an ALTER waiting behind a long query blocks every query
    queued after it, so failing fast and retrying is kinder to the application.
    """
    return seconds(DDL_LOCK_TIMEOUT_VAR, 5.0)


def lock_retries() -> int:
    """How many times a PostgreSQL run that hit the DDL lock timeout is rolled back and run again.

    strong_migrations and deploy scripts around Alembic do the same: the
    application's lock is usually gone a moment later, and each attempt blocks
    the queue behind it for at most the DDL lock timeout.
    """
    return _count(LOCK_RETRIES_VAR, 5, most=MAX_RETRIES, zero_means="never retry")


def statement_timeout() -> float:
    """How long one statement of a migration transaction may run on PostgreSQL; 0 is no limit.

    Off by default: a run is one transaction, so a cancelled statement costs
    the whole run, and only the user knows how long a rewrite of their table
    may take. Steps in ``autocommit_block()`` are never bounded (see ``locking``).
    """
    return seconds(STATEMENT_TIMEOUT_VAR, 0.0, zero_means="no limit")


def lock_wait_milliseconds(*, online_step: bool) -> int:
    """The ``lock_timeout`` a PostgreSQL migration statement runs under, in milliseconds.

    ``MIGRATION_DDL_LOCK_TIMEOUT``, capped just under ``MIGRATION_STATEMENT_TIMEOUT``
    in a transaction whose statement timeout is shorter. Both clocks run while a
    statement queues for a lock, and the shorter one ends the wait: a
    statement timeout would report a lock wait as a slow statement, and a run
    is retried only after a lock timeout. A statement's lock wait starts a
    moment after the statement does, so the cap leaves a tenth of the
    statement timeout (at most a second) between the two. No statement timeout
    applies inside ``autocommit_block()`` (``online_step``), so no cap either.
    """
    ddl = milliseconds(ddl_lock_timeout())
    statement = 0 if online_step or not statement_timeout() else milliseconds(statement_timeout())
    if not statement:
        return ddl
    margin = max(1, min(statement // 10, 1000))
    return max(1, min(ddl, statement - margin))


def backfill_batch() -> int:
    """Rows an expand revision's backfill touches per transaction (``dbtools.autogenerate.phases``)."""
    return _count(BACKFILL_BATCH_VAR, 1000, most=1_000_000, zero_means="the default, 1000") or 1000


def backfill_pause() -> float:
    """Seconds a backfill sleeps between batches, leaving the table to the application; 0 by default."""
    return seconds(BACKFILL_PAUSE_VAR, 0.0, zero_means="no pause")


def backup_keep() -> int:
    """How many SQLite backups to keep per database; 0 turns backups off."""
    return _count(BACKUP_KEEP_VAR, 5, most=10**9, zero_means="turns backups off")


def sqlite_only() -> bool:
    """Whether the project never deploys to PostgreSQL: autogenerate then compares for SQLite alone.

    By default every model change must hold on both backends, and
    PostgreSQL's facts (``schema/postgresql.sql``) are compared too. With
    ``MIGRATION_BACKENDS=sqlite`` they are not, and what SQLite cannot hold is
    refused by name (``dbtools.autogenerate.sqlite_only``) instead of lost.
    """
    raw = os.environ.get(BACKENDS_VAR, "").strip()
    words = set(raw.lower().replace(",", " ").split())
    if words in (set(), {"sqlite", "postgresql"}):
        return False
    if words == {"sqlite"}:
        return True
    raise _refuse(
        f"{BACKENDS_VAR}={raw!r} is neither 'sqlite' (never deployed to PostgreSQL) nor "
        "'sqlite,postgresql' (the default); fix or unset it"
    )


# PostgreSQL's identifiers hold at most 63 bytes (NAMEDATALEN - 1); longer ones are silently cut.
MAX_IDENTIFIER_BYTES = 63


def schema() -> str | None:
    """PostgreSQL: the tenant schema a run migrates (schema per tenant); None is the default schema.

    Only ASCII letters, digits and ``_`` (not first a digit), so the name reads
    the same quoted or not, and never ``pg_*``, which PostgreSQL reserves. It is
    quoted wherever it reaches SQL all the same (``quoted_schema``).
    """
    raw = os.environ.get(SCHEMA_VAR, "")
    if not raw:
        return None
    if not (
        raw.isascii()
        and (raw[0].isalpha() or raw[0] == "_")
        and all(c.isalnum() or c == "_" for c in raw)
        and len(raw.encode()) <= MAX_IDENTIFIER_BYTES
    ):
        raise _refuse(
            f"{SCHEMA_VAR}={raw!r} is not a schema name: ASCII letters, digits and _, not first a digit, "
            f"at most {MAX_IDENTIFIER_BYTES} bytes; fix or unset it"
        )
    if raw.lower().startswith("pg_"):
        raise _refuse(f"{SCHEMA_VAR}={raw!r}: names starting with pg_ are PostgreSQL's own; choose another")
    return raw


def quoted_schema(name: str) -> str:
    """A schema name as an SQL identifier: double-quoted, any double quote doubled."""
    return '"' + name.replace('"', '""') + '"'


def check_all() -> None:
    """Refuse a malformed setting before anything is opened, whichever backend reads it."""
    lock_timeout(), ddl_lock_timeout(), lock_retries(), statement_timeout(), backup_keep(), sqlite_only()
    backfill_batch(), backfill_pause()
    schema()

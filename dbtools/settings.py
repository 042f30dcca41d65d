"""Tunables read from the environment, validated once, with safe defaults."""

from __future__ import annotations

import math
import os

from alembic.util import CommandError

LOCK_TIMEOUT_VAR = "MIGRATION_LOCK_TIMEOUT"
BACKUP_KEEP_VAR = "MIGRATION_BACKUP_KEEP"
DDL_LOCK_TIMEOUT_VAR = "MIGRATION_DDL_LOCK_TIMEOUT"


# PostgreSQL's timeouts are whole milliseconds in an int: about 24.8 days at most.
MAX_SECONDS = 2_147_483


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_SECONDS:  # also refuses nan and inf
        raise CommandError(
            f"{name}={raw!r} is not a positive number of seconds (at most {MAX_SECONDS:,}); fix or unset it"
        )
    return value


def milliseconds(seconds: float) -> int:
    """For PostgreSQL, where 0 means "wait forever": a positive wait never rounds down to it."""
    return max(1, math.ceil(seconds * 1000))


def lock_timeout() -> float:
    """How long a run waits for another migration run to finish."""
    return _seconds(LOCK_TIMEOUT_VAR, 60.0)


def ddl_lock_timeout() -> float:
    """How long one PostgreSQL statement may queue for a table lock.

    Short on purpose: an ALTER waiting behind a long query blocks every query
    queued after it, so failing fast and retrying is kinder to the application.
    """
    return _seconds(DDL_LOCK_TIMEOUT_VAR, 5.0)


def backup_keep() -> int:
    """How many SQLite backups to keep per database; 0 turns backups off."""
    raw = os.environ.get(BACKUP_KEEP_VAR, "").strip()
    if not raw:
        return 5
    if not raw.isdigit():
        raise CommandError(
            f"{BACKUP_KEEP_VAR}={raw!r} is not a whole number (0 turns backups off); fix or unset it"
        )
    return int(raw)

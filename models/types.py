"""Column types that make values mean the same thing on every backend."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An instant, always read back as a timezone-aware UTC ``datetime``.

    PostgreSQL stores ``timestamp with time zone``; SQLite has no such type and
    stores the text of ``CURRENT_TIMESTAMP``, which is UTC without an offset.
    Naive values are refused on the way in, because their zone is a guess.
    Migrations render this as ``sa.DateTime(timezone=True)`` (``dbtools.autogen``), so
    they never import application code.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give it a timezone")
        value = value.astimezone(UTC)
        # SQLite would store the offset as text and then compare text: store
        # plain UTC, in the same shape as CURRENT_TIMESTAMP.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

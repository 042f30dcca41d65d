"""Column types that make values mean the same thing on every backend."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class _SQLiteInstant(sqlite.DATETIME):
    """SQLite's DATETIME has numeric affinity, so another client may store epoch seconds there.

    SQLAlchemy parses only text; a number is read as the UTC instant it denotes.
    """

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        parse = super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
            return parse(value) if parse else value

        return process


class UTCDateTime(TypeDecorator[datetime]):
    """An instant, always read back as a timezone-aware UTC ``datetime``.

    PostgreSQL stores ``timestamp with time zone``; SQLite has no such type and
    stores the text of ``CURRENT_TIMESTAMP``, which is UTC without an offset
    (or, written by another client, epoch seconds: read as that UTC instant).
    Naive values are refused on the way in, because their zone is a guess.
    Migrations render this as ``sa.DateTime(timezone=True)`` (``dbtools.autogenerate.hooks``), so
    they never import application code.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return _SQLiteInstant(timezone=True)  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
        return super().load_dialect_impl(dialect)

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

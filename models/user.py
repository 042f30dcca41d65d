"""The ``users`` table."""

from datetime import datetime

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.types import UTCDateTime


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # 320 = 64-character local part + "@" + 255-character domain (RFC 5321).
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Set by the database, so rows written by any client get the same clock.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=func.current_timestamp())

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r})"

"""The ``users`` table."""

from datetime import datetime

from decimal import Decimal
from typing import Any
import datetime as dt

import sqlalchemy as sa
from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.types import UTCDateTime


class User(Base):
    __tablename__ = "users"
    __table_args__ = (sa.CheckConstraint("balance >= 0", name="balance_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # 320 = 64-character local part + "@" + 255-character domain (RFC 5321).
    email: Mapped[str] = mapped_column(String(320), unique=True, comment="the user's verified address")
    # Set by the database, so rows written by any client get the same clock.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=func.current_timestamp())

    is_active: Mapped[bool] = mapped_column(server_default=sa.true())

    is_admin: Mapped[bool] = mapped_column(server_default=sa.false())

    role: Mapped[str] = mapped_column(
        sa.Enum("member", "admin", "guest", name="user_role"), server_default="guest"
    )

    display_name: Mapped[str] = mapped_column(String(64), server_default="")

    balance: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2), server_default="0")

    preferences: Mapped[Any] = mapped_column(sa.JSON, nullable=True)

    birthday: Mapped[dt.date | None] = mapped_column(sa.Date)

    time_zone: Mapped[str] = mapped_column(String(64), server_default="UTC")

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r})"


sa.Index(
    "ix_users_positive_balance",
    User.balance,
    postgresql_where=sa.text("balance > 100"),
    sqlite_where=sa.text("balance > 100"),
)


sa.Index("uq_users_lower_email", sa.func.lower(User.email), unique=True)

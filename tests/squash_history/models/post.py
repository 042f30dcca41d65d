"""Posts, written by users."""

import uuid
from typing import Any
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.types import UTCDateTime


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "title"),
        sa.UniqueConstraint("user_id"),
        sa.UniqueConstraint("editor_id", "title"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    editor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    body: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    rank: Mapped[int | None] = mapped_column()
    status: Mapped[str | None] = mapped_column(sa.Enum("draft", "published", name="post_status"))

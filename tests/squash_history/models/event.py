"""Events: an identity key and a generated column."""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (sa.CheckConstraint("length(kind) > 0", name="kind_not_empty"),)

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(40))
    kind_key: Mapped[str | None] = mapped_column(sa.String(40), sa.Computed("lower(kind)", persisted=True))

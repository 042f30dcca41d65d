"""Tags, and the labels users give themselves."""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class UserLabel(Base):
    __tablename__ = "user_labels"

    # A composite key that includes a foreign key: it owns no sequence.
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(40), primary_key=True)

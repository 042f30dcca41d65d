"""The application's tables: the single source of truth for the schema.

Alembic's autogenerate compares ``Base.metadata`` with the database, so every
model must be imported here to be seen.
"""

from models.base import Base
from models.types import UTCDateTime
from models.event import Event
from models.note import Note
from models.post import Post
from models.tag import UserLabel
from models.user import User

# The package-level handle tools look for (pytest-alembic's model-registration
# test finds the models through it).
metadata = Base.metadata

__all__ = ["Base", "UTCDateTime", "User"]

"""Constraint names in a migration come from the models' naming convention, always.

Alembic's ``op`` names a constraint through ``target_metadata``'s naming
convention: ``batch_op.create_check_constraint("email_at", ...)`` becomes
``ck_users_email_at``. A plain ``make upgrade`` does not load the models (a
sixth of a no-op run), and without them the same line named it ``email_at``,
so the name depended on which command applied the migration. ``Conventions``
stands in for the models' metadata and loads them only when an operation
asks for the convention, that is, only when something is migrated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import MetaData


class Conventions:
    """What Alembic's operations read from ``target_metadata``: its naming convention, loaded lazily."""

    def __init__(self, load: Callable[[], MetaData]) -> None:
        self._load = load

    @property
    def naming_convention(self) -> Any:
        return self._load().naming_convention

"""Constraint names in a migration come from the models' naming convention, always.

Alembic's ``op`` names a constraint through ``target_metadata``'s naming
convention: ``batch_op.create_check_constraint("email_at", ...)`` becomes
``ck_users_email_at``. A plain ``make upgrade`` does not load the models (a
sixth of a no-op run), and without them the same line named it ``email_at``,
so the name depended on which command applied the migration. ``Conventions``
stands in for the models' metadata: it reads the convention from
``models/naming.py`` (no ORM) when an operation asks, and loads the models
only if something asks for more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import MetaData


class Conventions:
    """The models' metadata, loaded when something first asks for more than its naming convention.

    Alembic's operations ask for ``naming_convention`` (every one of them,
    through the MetaData it builds), which ``convention`` reads without the
    ORM; anything else (a tool reading ``target_metadata.tables``) loads the
    models, once.
    """

    def __init__(self, load: Callable[[], MetaData], convention: Callable[[], Any] | None = None) -> None:
        self._load = load
        self._convention = convention
        self._read: Any = None

    @property
    def naming_convention(self) -> Any:
        if self._read is None:
            found = self._convention() if self._convention is not None else None
            self._read = found if found is not None else self._load().naming_convention
        return self._read

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

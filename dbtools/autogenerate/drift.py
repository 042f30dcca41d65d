"""What ``make check`` would find: the models compared with a connection, as autogenerate compares.

``make status`` shows it in one line, and ``make stamp`` refuses to adopt a
database that differs; both use the same comparators as ``make migration``.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from dbtools.autogenerate import hooks


def differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """Alembic's diff tuples between ``metadata`` and the database behind ``connection``."""
    context = MigrationContext.configure(connection, opts=dict(hooks.COMPARE_OPTIONS))
    return list(compare_metadata(context, metadata))


def phrases(connection: Connection) -> list[str]:
    """Each difference from the models, in a short phrase."""
    from models import Base

    return [_describe(diff) for diff in differences(connection, Base.metadata)]


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # modify_* come grouped per column
        diff = diff[0]
        return f"{diff[0]} {diff[2]}.{diff[3]}"
    kind, *rest = diff
    names = [getattr(item, "name", None) or str(item) for item in rest if item is not None]
    return " ".join([kind, *names[:2]])

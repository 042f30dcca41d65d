"""How autogenerate compares the models with a database and writes scripts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext

from dbtools.integrity import TABLE_NAME as CHECKSUM_TABLE


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render application types as plain SQLAlchemy ones.

    A migration must keep working after the models change, so it must never
    import application code.
    """
    from models import UTCDateTime  # only autogenerate renders, so only it loads the models

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def skip_empty_revision(
    context: MigrationContext,
    revision: str | Iterable[str | None] | Iterable[str],
    directives: list[MigrationScript],
) -> None:
    """Write no file when the models did not change (Alembic cookbook recipe).

    ``make migration`` passes this to ``command.revision``; ``alembic check``
    must keep its (empty) script to report on, so env.py does not install it.
    """
    script = directives[0]
    if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []
        print("No changes detected; no migration written.")


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """The checksum table is bookkeeping beside alembic_version, not part of the models."""
    return not (type_ == "table" and name == CHECKSUM_TABLE)


COMPARE_OPTIONS: dict[str, Any] = {
    "compare_type": True,
    "compare_server_default": True,
    "render_item": render_item,
    "include_name": include_name,
}

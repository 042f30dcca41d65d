"""The options every migration context of the project starts from, wherever the migrations run.

env.py's runs, online and offline (``make sql``, and ``make lint``'s
rendering of each revision), and the scratch runs of ``make schema`` and
``make status`` (``dbtools.runtime.scratch``) all configure their context
from ``context_options()``, so an operation does the same thing whichever
command runs it: ``batch_op.create_check_constraint("email_at", ...)``
names ``ck_users_email_at`` everywhere, not only under ``make upgrade``.
What only one kind of run needs (a connection, autogenerate's comparators,
literal SQL offline) is added beside these by its caller.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

from dbtools.runtime import naming


def load_models() -> MetaData:
    """The models' metadata: importing them loads the ORM, so only when something asks."""
    from models import Base

    return Base.metadata


def context_options(models: MetaData | None = None) -> dict[str, Any]:
    """The keywords of ``context.configure()`` (or ``opts`` of ``MigrationContext.configure()``)."""
    return {
        # Constraint names from the models' naming convention; without the models
        # loaded, a stand-in that loads them when an operation asks for it.
        "target_metadata": models if models is not None else naming.Conventions(load_models),
        # One transaction per run, on SQLite too: the engine really begins one.
        "transactional_ddl": True,
        # SQLite can ALTER little; autogenerate writes batch mode, which rebuilds the table.
        "render_as_batch": True,
    }

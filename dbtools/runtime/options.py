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

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData

from dbtools.runtime import naming


def load_models() -> MetaData:
    """The models' metadata: importing them loads the ORM, so only when something asks."""
    from models import Base

    return Base.metadata


def load_convention() -> dict[str, Any] | None:
    """The models' naming convention, read from ``models/naming.py`` without importing ``models``.

    Importing the package would run its ``__init__`` and load the ORM, which
    costs a migration run more than most operations do. None when the project
    keeps its convention elsewhere: the models are loaded for it then.
    """
    found = importlib.util.find_spec("models")  # the package located, not imported
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / "naming.py"
    spec = importlib.util.spec_from_file_location("_models_naming_convention", path)
    if spec is None or spec.loader is None or not path.exists():
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    convention = getattr(module, "NAMING_CONVENTION", None)
    return dict(convention) if isinstance(convention, dict) else None


def context_options(models: MetaData | None = None) -> dict[str, Any]:
    """The keywords of ``context.configure()`` (or ``opts`` of ``MigrationContext.configure()``)."""
    return {
        # Constraint names from the models' naming convention; without the models
        # loaded, a stand-in that loads them when an operation asks for it.
        "target_metadata": models if models is not None else naming.Conventions(load_models, load_convention),
        # One transaction per run, on SQLite too: the engine really begins one.
        "transactional_ddl": True,
        # SQLite can ALTER little; autogenerate writes batch mode, which rebuilds the table.
        "render_as_batch": True,
    }

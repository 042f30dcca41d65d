"""``make rehearse``: run the pending migrations for real, time each, keep nothing."""

from __future__ import annotations

from alembic.config import Config

from dbtools import target
from dbtools.runtime.rehearsal import rehearsal


def rehearse(config: Config, revision: str = "head") -> None:
    print("\n".join(rehearsal(config, target.resolve(config), revision).lines()))

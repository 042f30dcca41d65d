"""``make status``: every migration, applied or pending, its checksum, and model drift."""

from __future__ import annotations

from alembic.config import Config

from dbtools import target
from dbtools.autogenerate import drift
from dbtools.runtime.status import collect


def status(config: Config) -> None:
    print("\n".join(collect(config, target.resolve(config), drift.phrases).lines()))

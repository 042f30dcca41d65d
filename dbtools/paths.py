"""Where the project lives and which database it is configured for.

Every entry point (env.py, the CLI, the tests, the benchmark) starts here, so
the project root, ``alembic.ini`` and the database URL are each found one way.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import URL

from dbtools.target import resolve_url

ROOT = Path(__file__).resolve().parent.parent
INI = ROOT / "alembic.ini"
VERSIONS = ROOT / "migrations" / "versions"


def alembic_config() -> Config:
    return Config(str(INI))


def root_of(config: Config) -> Path:
    """The project that ``config`` belongs to (a copy of this one, in the tests)."""
    return Path(config.config_file_name).resolve().parent if config.config_file_name else ROOT


def database_url(config: Config) -> URL:
    """``DATABASE_URL`` over ``sqlalchemy.url``; relative SQLite paths are relative to ROOT."""
    return resolve_url(config.get_main_option("sqlalchemy.url"), ROOT)

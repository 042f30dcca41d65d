"""Where the project lives: its root, ``alembic.ini`` and the migration files.

Every entry point (env.py, the CLI, the no-op fast path, the tests, the
benchmark) finds them here, one way. Standard library only: the fast path
reads these before SQLAlchemy or Alembic is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
INI = ROOT / "alembic.ini"
ENV = ROOT / "migrations" / "env.py"
VERSIONS = ROOT / "migrations" / "versions"
# The no-op fast path's records (dbtools.runtime.fastpath); git-ignored.
CACHE = ROOT / ".dbtools"
# The committed DDL at head (make schema), relative to a project's root.
SCHEMA = Path("schema")
# Where a database keeps its migration records: Alembic's table and the project's checksums.
VERSION_TABLE = "alembic_version"
CHECKSUM_TABLE = "alembic_checksums"
# How far a migration that commits midway got (dbtools.runtime.resume); PostgreSQL only.
PROGRESS_TABLE = "alembic_progress"
# A squash kept beside the migrations it replaces until they are pruned (make squash): a name
# Alembic does not load, as it loads only names ending in .py.
SQUASH_SUFFIX = ".py.squash"
# The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def write_private(path: Path, text: str) -> None:
    """A file only its owner reads, in a folder only its owner enters (made so if new).

    For what holds a secret or says where one is: the throwaway server's
    password and URL, the fast path's records.
    """
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)


def alembic_config() -> Config:
    from alembic.config import Config

    return Config(str(INI))


def root_of(config: Config) -> Path:
    """The project that ``config`` belongs to (a copy of this one, in the tests)."""
    return Path(config.config_file_name).resolve().parent if config.config_file_name else ROOT

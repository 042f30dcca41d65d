"""Which database a migration run talks to, and how it connects.

The URL comes from ``DATABASE_URL`` or ``alembic.ini``; it is kept as a
SQLAlchemy ``URL`` object and never written back into the Alembic config,
whose ConfigParser interpolation would choke on a percent-encoded password.
Every message that names the URL masks its password.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from sqlalchemy import create_engine, event, pool
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from dbtools.settings import lock_timeout

SQLITE_HEADER = b"SQLite format 3\x00"
EXAMPLE_URLS = "sqlite:///app.db or postgresql+psycopg://user:password@host:5432/dbname"


def resolve_url(ini_url: str | None, project_root: Path) -> URL:
    """The URL to migrate: ``DATABASE_URL`` wins over ``sqlalchemy.url``."""
    raw = os.environ.get("DATABASE_URL") or ini_url
    if not raw:
        raise CommandError(f"no database configured; set DATABASE_URL, e.g. {EXAMPLE_URLS}")
    try:
        url = make_url(raw)
    except ArgumentError:
        # Not echoed: an unparseable URL cannot be masked and may hold a password.
        raise CommandError(
            f"DATABASE_URL is not a valid database URL; expected e.g. {EXAMPLE_URLS}"
        ) from None
    if url.get_backend_name() == "sqlite" and not is_memory(url) and url.database:
        path = Path(url.database)
        if not path.is_absolute():
            # Relative to the project, never to wherever the command was run.
            url = url.set(database=str(project_root / path))
    return url


def mask(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def scrub(text: str, url: URL) -> str:
    """Remove the password from a driver's message, in case it echoes it."""
    if url.password:
        text = text.replace(str(url.password), "***")
    return text


def is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or bool(url.query.get("mode") == "memory")


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL; None for other backends and memory."""
    if url.get_backend_name() != "sqlite" or is_memory(url) or url.query.get("uri"):
        return None
    return Path(str(url.database))


def check_sqlite_file(path: Path) -> None:
    """Refuse, before SQLite touches it, a file that cannot be migrated safely.

    SQLite would otherwise create files in odd places, silently open a file it
    cannot write read-only, or fail late with "file is not a database".
    """
    directory = path.parent
    if not directory.is_dir():
        raise CommandError(
            f"the directory of the SQLite database {path} does not exist; "
            f"create it (mkdir -p {directory}) or point DATABASE_URL at an existing one"
        )
    if path.exists():
        if not path.is_file():
            raise CommandError(f"{path} is not a file; point DATABASE_URL at a SQLite database")
        try:
            with path.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise CommandError(
                f"cannot read the SQLite database {path} ({exc.strerror}); fix its permissions"
            ) from None
        if header and header != SQLITE_HEADER:
            raise CommandError(
                f"{path} is not a SQLite database; it was left untouched. "
                "Point DATABASE_URL at the right file, or move this one away"
            )
        if not os.access(path, os.W_OK):
            raise CommandError(
                f"the SQLite database {path} is read-only; make it writable (chmod u+w) to migrate it"
            )
    # SQLite writes its rollback journal beside the database, and creates it there.
    if not os.access(directory, os.W_OK):
        raise CommandError(
            f"the directory {directory} is read-only, and SQLite needs to write "
            f"{path.name} and its journal there; make it writable to migrate"
        )


def exists(url: URL) -> bool:
    """Whether there is a database to look at; a SQLite file found is checked before use.

    Other backends are asked by connecting, which fails clearly when they are not there.
    """
    path = sqlite_path(url)
    if path is None:
        return True
    if not path.exists():
        return False
    check_sqlite_file(path)
    return True


def check_before_opening(url: URL, *, may_create: bool) -> None:
    """Only runs that may migrate create a missing SQLite file; the others refuse."""
    path = sqlite_path(url)
    if path is None:
        return
    if not may_create and not path.exists():
        raise CommandError(f"{path} does not exist yet; run `make upgrade` to create it")
    check_sqlite_file(path)


def build_engine(url: URL) -> Engine:
    """An engine whose transactions really wrap DDL, on every backend.

    pysqlite's own transaction handling commits before DDL, so Alembic on
    SQLite normally runs without a transaction. SQLAlchemy's documented recipe
    turns that off and emits ``BEGIN IMMEDIATE`` itself: the whole run is one
    transaction, and the write lock is taken before the current revision is
    read, so concurrent runs queue (for up to ``MIGRATION_LOCK_TIMEOUT``).
    """
    kwargs: dict[str, Any] = {"poolclass": pool.NullPool}
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        kwargs["connect_args"] = {"timeout": lock_timeout()}
    try:
        engine = create_engine(url, **kwargs)
    except NoSuchModuleError:
        raise CommandError(
            f"DATABASE_URL names an unknown database {url.drivername!r} ({mask(url)}); "
            f"expected e.g. {EXAMPLE_URLS}"
        ) from None
    except ImportError as exc:
        raise CommandError(
            f"the database driver for {url.drivername!r} is not installed ({exc.name or exc}); "
            "add it to requirements.txt and run `make install`, or use postgresql+psycopg://"
        ) from None
    if sqlite:
        event.listen(engine, "connect", _sqlite_driver_autocommit)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")

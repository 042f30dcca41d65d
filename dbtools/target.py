"""The database a command or a run works on, resolved once from configuration.

The URL comes from ``DATABASE_URL`` or ``alembic.ini``. ``resolve`` turns it
into a frozen ``Target`` at the start of a command or a run, and every later
room reads its fields (the backend, the SQLite file, the masked form, whether
it is read-only) instead of asking the URL again. The URL is kept as a
SQLAlchemy ``URL`` object and never written back into the Alembic config,
whose ConfigParser interpolation would choke on a percent-encoded password.
Every message that names the database uses ``masked`` or ``where``, and any
driver text passes through ``scrub``: a password is never printed.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, unquote

from alembic.util import CommandError
from sqlalchemy import create_engine, event, pool
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from dbtools.paths import ROOT, SQLITE_HEADER
from dbtools.settings import SCHEMA_VAR, lock_timeout, quoted_schema, schema

if TYPE_CHECKING:
    from alembic.config import Config

EXAMPLE_URLS = "sqlite:///app.db or postgresql+psycopg://user:password@host:5432/dbname"
# Query parameters SQLite reads only from a URI filename; pysqlite drops them otherwise.
URI_ONLY_PARAMETERS = ("mode", "cache", "immutable", "nolock", "vfs", "psow", "modeof")


class Backend(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
    OTHER = "other"


class Target(NamedTuple):
    """A database URL with every answer a command needs about it, computed once.

    Immutable; a NamedTuple, not a frozen dataclass, whose generated methods every run
    would compile at import (bench/).
    """

    url: URL
    backend: Backend
    # The file behind a SQLite URL (URI filenames included); None in memory or on a server.
    sqlite_path: Path | None
    # The URL as messages show it: no password, a SQLite path as it is spelled on disk.
    masked: str
    # A URI filename opened with mode=ro: fine for looking, refused for migrating.
    read_only: bool
    # PostgreSQL: the tenant schema (MIGRATION_SCHEMA) every connection's search_path is set to.
    schema: str | None = None

    @classmethod
    def of(cls, url: URL, schema: str | None = None) -> Target:
        """A target for a URL already resolved (a test's database, lint's rendering dialect, a copy)."""
        backend = {b.value: b for b in Backend}.get(url.get_backend_name(), Backend.OTHER)
        uri = _is_uri(url)
        if schema is not None and backend is not Backend.POSTGRESQL:
            raise CommandError(
                f"{SCHEMA_VAR} is for PostgreSQL, and DATABASE_URL names {url.get_backend_name()}, "
                "which has no schemas; nothing was changed. Give each tenant its own database file, "
                "or unset it"
            )
        masked = _mask(url, backend)
        return cls(
            url=url,
            backend=backend,
            sqlite_path=_sqlite_path(url, uri) if backend is Backend.SQLITE else None,
            masked=f"{masked}#{schema}" if schema else masked,
            read_only=uri and url.query.get("mode") == "ro",
            schema=schema,
        )

    @property
    def plain_file(self) -> Path | None:
        """The SQLite file when the URL names nothing else (no URI filename, no parameters)."""
        return self.sqlite_path if not self.url.query else None

    @property
    def where(self) -> str:
        """How a message names it: the SQLite file, else the masked URL."""
        return str(self.sqlite_path or self.masked)

    def scrub(self, text: str) -> str:
        """Remove the password from a driver's message, in case it echoes it."""
        if self.url.password:
            text = text.replace(str(self.url.password), "***")
        return text

    def with_database(self, database: str) -> Target:
        """The same server or driver, another database (a rehearsal's copy, or memory)."""
        return Target.of(self.url.set(database=database), self.schema)

    def exists(self, *, writes: bool = True) -> bool:
        """Whether there is a database to look at; a SQLite file found is checked before use.

        Other backends are asked by connecting, which fails clearly when they are not there.
        """
        if self.sqlite_path is None:
            return True
        if not self.sqlite_path.exists():
            return False
        check_sqlite_file(self.sqlite_path, writes=writes)
        return True

    def check_before_opening(self, *, may_create: bool, writes: bool) -> None:
        """Only runs that may migrate create a missing SQLite file; the others refuse."""
        path = self.sqlite_path
        if path is None:
            return
        if writes and self.read_only:
            raise CommandError(
                f"DATABASE_URL opens {path} read-only (mode=ro), and a migration writes; "
                "nothing was changed. Drop mode=ro to migrate"
            )
        if not may_create and not path.exists():
            raise CommandError(f"{path} does not exist yet; run `make upgrade` to create it")
        check_sqlite_file(path, writes=writes)

    def engine(self, *, writes: bool = True, creates_schema: bool = False) -> Engine:
        """An engine whose transactions really wrap DDL, on every backend.

        pysqlite's own transaction handling commits before DDL, so Alembic on
        SQLite normally runs without a transaction. SQLAlchemy's documented recipe
        turns that off and emits ``BEGIN IMMEDIATE`` itself: the whole run is one
        transaction, and the write lock is taken before the current revision is
        read, so concurrent runs queue (for up to ``MIGRATION_LOCK_TIMEOUT``).
        A run that only reads (``writes=False``) begins a plain transaction: a
        consistent snapshot that works on a read-only file too.

        With a tenant ``schema``, every connection's search_path is that schema
        alone before SQLAlchemy first looks at it, so unqualified names (the
        migrations', ``alembic_version``, the bookkeeping tables, reflection)
        mean the tenant's; a missing schema is created only if ``creates_schema``.
        """
        kwargs: dict[str, Any] = {"poolclass": pool.NullPool}
        sqlite = self.backend is Backend.SQLITE
        if sqlite:
            kwargs["connect_args"] = {"timeout": lock_timeout()}
        try:
            engine = create_engine(self.url, **kwargs)
        except NoSuchModuleError:
            raise CommandError(_unknown_dialect(self.url)) from None
        except ImportError as exc:
            raise CommandError(
                f"the database driver for {self.url.drivername!r} is not installed ({exc.name or exc}); "
                "add it to requirements.txt and run `make install`, or use postgresql+psycopg://"
            ) from None
        if self.schema is not None:
            # insert=True: before SQLAlchemy's first connect reads the default schema.
            event.listen(engine, "connect", self._enter_schema(creates_schema), insert=True)
        if sqlite:
            event.listen(engine, "connect", _sqlite_driver_autocommit)
            event.listen(engine, "begin", _sqlite_begin_immediate if writes else _sqlite_begin_deferred)
        return engine

    def _enter_schema(self, creates: bool) -> Any:
        """A connect listener: the schema made the session's whole search_path (created if ``creates``)."""
        name = str(self.schema)
        quoted = quoted_schema(name)
        where = self.url.render_as_string(hide_password=True)

        def enter(dbapi_connection: Any, _record: Any) -> None:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True  # a SET outside any transaction lasts the session
            try:
                with dbapi_connection.cursor() as cursor:
                    cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,))
                    if cursor.fetchone() is None:
                        if not creates:
                            missing = f"schema {quoted} does not exist yet in {where}"
                            raise CommandError(f"{missing}; run `make upgrade` to create it")
                        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
                    # The tenant's schema alone: a table missing there must not be found in public.
                    cursor.execute(f"SET search_path TO {quoted}")
            except CommandError:
                dbapi_connection.close()
                raise
            except Exception as exc:  # the driver's: the role may not create schemas, say
                dbapi_connection.close()
                lines = str(exc).strip().splitlines()
                raise CommandError(
                    f"cannot use schema {quoted} in {where}: {self.scrub(lines[0] if lines else repr(exc))}; "
                    "create it as the database owner (CREATE SCHEMA ... AUTHORIZATION <role>), "
                    "or GRANT CREATE ON DATABASE to the role"
                ) from None
            dbapi_connection.autocommit = autocommit

        return enter


def resolve(config: Config) -> Target:
    """``DATABASE_URL`` over ``sqlalchemy.url``; relative SQLite paths are relative to the project.

    ``MIGRATION_SCHEMA`` makes a PostgreSQL URL one tenant's schema; it is refused elsewhere.
    """
    return Target.of(resolve_url(config.get_main_option("sqlalchemy.url"), ROOT), schema())


def resolve_url(ini_url: str | None, project_root: Path) -> URL:
    """The URL to migrate: ``DATABASE_URL`` wins over ``sqlalchemy.url``."""
    raw = os.environ.get("DATABASE_URL") or ini_url
    if not raw:
        raise CommandError(f"no database configured; set DATABASE_URL, e.g. {EXAMPLE_URLS}")
    if raw != raw.strip():
        # "sqlite:///app.db " would create and migrate a file "app.db ". Not echoed: may hold a password.
        raise CommandError(
            "DATABASE_URL starts or ends with whitespace, which would name another database; remove it"
        )
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # Not echoed: an unparseable URL cannot be masked and may hold a password. A ValueError
        # is a port that is not a number: often the tail of a password with an unencoded ":".
        url = None
    if url is None or "@" in (url.host or ""):
        # A host holding "@" is the rest of a password with an unencoded "@": masking would show it.
        raise CommandError(
            f"DATABASE_URL is not a valid database URL; expected e.g. {EXAMPLE_URLS}, "
            "with @, : and / in the user name or password percent-encoded (p@ss:word as "
            "p%40ss%3Aword) and an IPv6 host in brackets ([::1])"
        )
    if url.drivername in ("postgres", "postgresql"):
        # Heroku-style postgres://, and the bare dialect: psycopg 3 is the driver this project installs.
        url = url.set(drivername="postgresql+psycopg")
    try:
        url.get_dialect()  # make sql makes no engine: an unknown dialect must fail here, not in Alembic
    except NoSuchModuleError:
        raise CommandError(_unknown_dialect(url)) from None
    if url.get_backend_name() == "sqlite":
        url = _resolve_sqlite(url, project_root)
    return url


def _unknown_dialect(url: URL) -> str:
    return (
        f"DATABASE_URL names an unknown database {url.drivername!r} "
        f"({url.render_as_string(hide_password=True)}); expected e.g. {EXAMPLE_URLS}"
    )


def _resolve_sqlite(url: URL, project_root: Path) -> URL:
    uri = _is_uri(url)
    ignored = sorted(set(url.query) & set(URI_ONLY_PARAMETERS))
    if ignored and not uri:
        raise CommandError(
            f"SQLite ignores {', '.join(ignored)} in DATABASE_URL unless it is a URI filename; "
            "write it as sqlite:///file:app.db?mode=ro&uri=true, or drop the parameter"
        )
    path = _sqlite_path(url, uri)
    if path is None or path.is_absolute():
        return url
    # Relative to the project, never to wherever the command was run.
    absolute = project_root / path
    return url.set(database=f"file:{quote(str(absolute))}" if uri else str(absolute))


def _mask(url: URL, backend: Backend) -> str:
    if backend is Backend.SQLITE and url.database:
        query = "&".join(f"{key}={value}" for key, value in sorted(url.query.items()))
        return f"{url.drivername}:///{url.database}" + (f"?{query}" if query else "")
    return url.render_as_string(hide_password=True)


def _is_uri(url: URL) -> bool:
    return str(url.query.get("uri", "")).lower() in ("true", "1")


def _sqlite_path(url: URL, uri: bool) -> Path | None:
    """The file behind a SQLite URL, URI filenames (``file:...&uri=true``) included; None in memory."""
    if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        return None
    database = str(url.database)
    if uri and database.startswith("file:"):
        database = database.removeprefix("file:")
        if database.startswith("//"):  # file://[localhost]/path
            database = "/" + database[2:].partition("/")[2]
        return Path(unquote(database))
    return Path(database)


def check_sqlite_file(path: Path, *, writes: bool = True) -> None:
    """Refuse, before SQLite touches it, a file that cannot be migrated (or, not ``writes``, read).

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
        if writes and not os.access(path, os.W_OK):
            raise CommandError(
                f"the SQLite database {path} is read-only; make it writable (chmod u+w) to migrate it"
            )
    # SQLite writes its rollback journal beside the database, and creates it there.
    if writes and not os.access(directory, os.W_OK):
        raise CommandError(
            f"the directory {directory} is read-only, and SQLite needs to write "
            f"{path.name} and its journal there; make it writable to migrate"
        )


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")

"""A fleet's PostgreSQL targets: their URLs read, and their databases looked at, without SQLAlchemy.

A fleet whose every tenant is at head should cost little more than one look
at each server (``dbtools.fleet.current``), and importing SQLAlchemy costs
more than the look itself (about 0.13 s of a 0.45 s fleet, measured in
bench/fleet.md). So a URL of the everyday shape (``postgresql://user@host:port/db``,
plain characters, no password, no parameters) is read here, and rendered
exactly as SQLAlchemy renders it; any other URL goes to SQLAlchemy, which says
what it says of it to a single run. Either way, the result holds the keywords
SQLAlchemy's psycopg dialect would connect with, so the look (libpq, or
psycopg) and each target's run (SQLAlchemy) reach the same database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from dbtools.fleet import libpq
from dbtools.fleet.errors import FleetError

DRIVER = "postgresql+psycopg"
# What this module reads itself: characters SQLAlchemy's rendering leaves as they are
# (quote's unreserved ones), and nothing it would decode, drop or reorder.
PLAIN = re.compile(
    r"(?:postgres|postgresql|postgresql\+psycopg)://"
    r"(?:(?P<user>[A-Za-z0-9_.~-]+)@)?"
    r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"/(?P<database>[A-Za-z0-9_.~-]+)"
)


@dataclass(frozen=True)
class ServerUrl:
    """One server database a fleet names: as shown, as handed to its runs, and as psycopg connects."""

    shown: str  # masked: never the password
    full: str  # what DATABASE_URL gets: may hold the password, never printed
    connect: tuple[
        tuple[str, str | int], ...
    ]  # psycopg.connect's keywords, as SQLAlchemy's dialect gives them
    password: str | None

    def masked(self, text: str) -> str:
        """``text`` (a server's error) without this URL's password."""
        return text.replace(self.password, "***") if self.password else text


def parse(where: str, raw: str, password_env: object) -> ServerUrl:
    """The URL a fleet file gives (without a password) with the one ``password_env`` names, checked."""
    plain = PLAIN.fullmatch(raw)
    if plain is None or not 1 <= int(plain.group("port") or 1) <= 65535:
        return _parse_general(where, raw, password_env)  # SQLAlchemy's words for it
    user, host, port, database = plain.group("user", "host", "port", "database")
    password = _password(where, password_env)
    where_to = host + (f":{int(port)}" if port else "") + f"/{database}"
    shown = full = f"{DRIVER}://"
    keywords: dict[str, str | int] = {"host": host, "dbname": database}
    if port is not None:
        keywords["port"] = int(port)
    if user is not None:
        keywords["user"] = user
        shown, full = shown + user, full + user
        if password is not None:
            shown, full = shown + ":***", full + ":" + quote(password, safe=" +")
        if password:  # an empty one is no password to SQLAlchemy's dialect: libpq's own (PGPASSWORD) rules
            keywords["password"] = password
        shown, full = shown + "@", full + "@"
    return ServerUrl(shown + where_to, full + where_to, tuple(sorted(keywords.items())), password)


def _password(where: str, password_env: object) -> str | None:
    if password_env is None:
        return None
    if not isinstance(password_env, str) or not password_env:
        raise FleetError(f"{where}: password_env is not the name of an environment variable")
    if password_env not in os.environ:
        raise FleetError(f"{where}: password_env names {password_env}, which is not set; nothing was run")
    return os.environ[password_env]


def _parse_general(where: str, raw: str, password_env: object) -> ServerUrl:
    """Any other URL, as SQLAlchemy reads it: what a single run with it would connect to."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        url = None
    if url is None or "@" in (url.host or ""):  # never echoed: it may hold a password
        raise FleetError(f"{where}: url is not a valid database URL")
    if url.password is not None:
        raise FleetError(
            f"{where}: url holds a password, which a fleet file must not; nothing was run. "
            "Remove it and name an environment variable holding it with password_env"
        )
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername=DRIVER)
    if url.get_backend_name() != "postgresql":
        raise FleetError(
            f"{where}: {url.render_as_string(hide_password=True)!r} is neither a SQLite file nor PostgreSQL"
        )
    if url.drivername != DRIVER:  # the driver this project installs, which every run would need
        raise FleetError(
            f"{where}: url names the driver {url.drivername!r}; this project connects with psycopg 3: "
            "write postgresql://... (or postgresql+psycopg://...); nothing was run"
        )
    password = _password(where, password_env)
    if password is not None:
        url = url.set(password=password)
    full = url.render_as_string(hide_password=False)
    # As each run reads the URL it is handed (a password without a user name is not in it).
    from sqlalchemy.dialects.postgresql.psycopg import dialect

    _, keywords = dialect().create_connect_args(make_url(full))  # type: ignore[no-untyped-call]
    connect = tuple(
        sorted(
            (str(name), value if isinstance(value, (str, int)) else str(value))
            for name, value in keywords.items()
        )
    )
    return ServerUrl(url.render_as_string(hide_password=True), full, connect, password)


# A connection that listed a database's schemas while the fleet file was read, kept for the
# look at head that follows: one backend start and password exchange fewer. Never shared
# with a forked process: close_kept() comes before the look's own forks and every run's.
_kept: dict[ServerUrl, Reader] = {}


class Reader(Protocol):
    """A connection the look reads through: one statement's rows, every value as text."""

    @property
    def closed(self) -> bool: ...

    def rows(self, sql: str, parameters: Sequence[str] = ()) -> list[tuple[str | None, ...]]: ...

    def close(self) -> None: ...


@contextmanager
def connected(server: ServerUrl, keep: bool = False) -> Iterator[Reader]:
    """A connection to ``server``'s database, in autocommit: a look reads, and holds nothing.

    Through libpq itself when it can be loaded (``dbtools.fleet.libpq``: no psycopg
    import), else through psycopg. The one kept for ``server`` if there is one;
    kept in turn if ``keep`` and all went well.
    """
    conn = _kept.pop(server, None)
    if conn is None or conn.closed:
        keywords = {name: str(value) for name, value in server.connect}
        if any(value == "" for value in keywords.values()):
            # libpq's keyword form ignores an empty value where the runs' conninfo string is
            # refused for some (sslmode=''): the look would reach what the runs never do.
            raise libpq.LibpqError("an empty connection setting; each target's run decides")
        conn = libpq.Connection(keywords) if libpq.available() else _ViaPsycopg(keywords)
    try:
        yield conn
    except BaseException:
        conn.close()
        raise
    if keep:
        _kept[server] = conn
    else:
        conn.close()


class _ViaPsycopg:
    """The same reads through psycopg's own libpq binding, where ctypes finds no libpq."""

    def __init__(self, keywords: dict[str, str]) -> None:
        import psycopg

        try:
            self._conn = psycopg.connect(autocommit=True, client_encoding="UTF8", **keywords)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise libpq.LibpqError(str(exc)) from None

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    def rows(self, sql: str, parameters: Sequence[str] = ()) -> list[tuple[str | None, ...]]:
        import psycopg
        from psycopg import pq

        try:
            result = self._conn.pgconn.exec_params(sql.encode(), [value.encode() for value in parameters])
            if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                raise libpq.LibpqError((result.error_message or b"").decode(errors="replace").strip())
            values = [
                [result.get_value(row, column) for column in range(result.nfields)]
                for row in range(result.ntuples)
            ]
            return [
                tuple(None if value is None else bytes(value).decode() for value in row) for row in values
            ]
        except UnicodeDecodeError as exc:  # an SQL_ASCII database's bytes: not converted to UTF-8
            raise libpq.LibpqError(f"a value that is not UTF-8 ({exc.reason})") from None
        except psycopg.Error as exc:
            raise libpq.LibpqError(str(exc).strip()) from None

    def close(self) -> None:
        self._conn.close()


def close_kept() -> None:
    """Close every kept connection: before a run is forked, and when the fleet ends."""
    while _kept:
        _kept.popitem()[1].close()


def reason(server: ServerUrl, exc: Exception) -> str:
    """A failed connection or query as one line, without the password."""
    lines = str(exc).strip().splitlines()
    return server.masked(lines[0] if lines else type(exc).__name__)

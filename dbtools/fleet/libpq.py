"""libpq itself, through ctypes: the few calls a fleet's look at head makes, without importing psycopg.

A fleet whose tenants are all at head costs one look at each server. Importing
psycopg costs more than that look and everything else together (about 0.12 s
of a 0.18 s fleet of 300 schemas, measured in bench/fleet.md): psycopg brings
asyncio, importlib.metadata, ctypes.util, typing_extensions and its adapters.
The look needs five libpq calls and text results. So it loads the very libpq
psycopg's binary wheel ships (``psycopg_binary.libs``), or the system's, and
makes those calls itself: ``PQconnectdbParams`` with the keywords psycopg
would pass (``servers.ServerUrl.connect``), ``PQexecParams`` with text
parameters, ``PQgetvalue`` for text values. libpq reads the environment,
``.pgpass`` and TLS settings exactly as it does under psycopg.

Where no libpq can be found, ``available()`` is False and the look uses
psycopg (``dbtools.fleet.servers``). Every call's failure is a ``LibpqError``
with libpq's own message; every result and connection is freed.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading
from collections.abc import Sequence
from importlib.util import find_spec

CONNECTION_OK = 0
COMMAND_OK, TUPLES_OK = 1, 2
_lib: ctypes.CDLL | None = None
_searched = False
_loading = threading.Lock()


class LibpqError(Exception):
    """A connection or a query libpq refused; the message is libpq's (it never holds the password)."""


def available() -> bool:
    """Whether a libpq could be loaded (once per process)."""
    return _load() is not None


def _candidates() -> list[str]:
    """psycopg's binary wheel's own libpq first (the one the runs use), then the system's."""
    found: list[str] = []
    spec = find_spec("psycopg_binary")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        package = next(iter(spec.submodule_search_locations))
        found += sorted(glob.glob(os.path.join(package + ".libs", "libpq-*.so*")))  # Linux wheels
        found += sorted(glob.glob(os.path.join(package, ".dylibs", "libpq*.dylib")))  # macOS wheels
    found += ["libpq.5.dylib"] if sys.platform == "darwin" else ["libpq.so.5"]
    return found


def _load() -> ctypes.CDLL | None:
    global _lib, _searched
    with _loading:  # the look's second connection starts on a thread: one search, seen whole
        if not _searched:
            for candidate in _candidates():
                try:
                    _lib = _declare(ctypes.CDLL(candidate))
                    break
                except (OSError, AttributeError):
                    continue
            _searched = True
    return _lib


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    pointer, text, number = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    texts = ctypes.POINTER(ctypes.c_char_p)
    for name, result, arguments in (
        ("PQconnectdbParams", pointer, [texts, texts, number]),
        ("PQstatus", number, [pointer]),
        ("PQerrorMessage", text, [pointer]),
        ("PQfinish", None, [pointer]),
        ("PQexecParams", pointer, [pointer, text, number, pointer, texts, pointer, pointer, number]),
        ("PQresultStatus", number, [pointer]),
        ("PQresultErrorMessage", text, [pointer]),
        ("PQntuples", number, [pointer]),
        ("PQnfields", number, [pointer]),
        ("PQgetisnull", number, [pointer, number, number]),
        ("PQgetvalue", text, [pointer, number, number]),
        ("PQclear", None, [pointer]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = result, arguments
    return lib


def _texts(values: Sequence[str]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(values) + 1))(*(value.encode() for value in values), None)


class Connection:
    """One libpq connection, in autocommit (libpq's own default): text in, text out."""

    def __init__(self, keywords: dict[str, str]) -> None:
        lib = _load()
        if lib is None:
            raise LibpqError("no libpq library could be loaded")
        self._lib = lib
        words = {**keywords, "client_encoding": "UTF8"}
        self._conn = lib.PQconnectdbParams(_texts(list(words)), _texts(list(words.values())), 0)
        if not self._conn or lib.PQstatus(self._conn) != CONNECTION_OK:
            message = self._message(lib.PQerrorMessage(self._conn)) if self._conn else "out of memory"
            self.close()
            raise LibpqError(message)

    @property
    def closed(self) -> bool:
        return not self._conn

    def close(self) -> None:
        if self._conn:
            self._lib.PQfinish(self._conn)
            self._conn = None

    def rows(self, sql: str, parameters: Sequence[str] = ()) -> list[tuple[str | None, ...]]:
        """The result of one statement, every value as text (None for NULL)."""
        if not self._conn:
            raise LibpqError("the connection is closed")
        lib = self._lib
        values = _texts(parameters)
        result = lib.PQexecParams(self._conn, sql.encode(), len(parameters), None, values, None, None, 0)
        try:
            if not result or lib.PQresultStatus(result) not in (COMMAND_OK, TUPLES_OK):
                raise LibpqError(self._message(lib.PQresultErrorMessage(result) if result else b""))
            try:
                return [
                    tuple(
                        None
                        if lib.PQgetisnull(result, row, column)
                        else lib.PQgetvalue(result, row, column).decode()
                        for column in range(lib.PQnfields(result))
                    )
                    for row in range(lib.PQntuples(result))
                ]
            except UnicodeDecodeError as exc:  # an SQL_ASCII database's bytes: not converted to UTF-8
                raise LibpqError(f"a value that is not UTF-8 ({exc.reason})") from None
        finally:
            if result:
                lib.PQclear(result)

    def _message(self, raw: bytes | None) -> str:
        said = (raw or b"").decode(errors="replace").strip()
        if not said and self._conn:
            said = (self._lib.PQerrorMessage(self._conn) or b"").decode(errors="replace").strip()
        return said or "libpq failed without a message"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

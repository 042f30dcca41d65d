"""A fleet file's target entries expanded into targets: SQLite files and globs, PostgreSQL URLs and schemas.

A SQLite glob is matched against the files there now, relative to the fleet
file; a ``schemas`` pattern against the database's schemas, listed in one
query. A password never comes from the file: only from the environment
variable ``password_env`` names. Every mistake is one ``FleetError``
naming where in the file it is (``where``).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtools.fleet import servers
from dbtools.fleet.errors import FleetError
from dbtools.fleet.libpq import LibpqError
from dbtools.fleet.servers import ServerUrl
from dbtools.settings import MAX_IDENTIFIER_BYTES

TABLE_KEYS = {"url", "password_env", "schemas"}
GLOB_CHARS = "*["  # and not ?, which would start a URL's parameters


@dataclass(frozen=True)
class Target:
    """One database (or one tenant schema of one) to bring to the revision asked for."""

    group: str
    shown: str  # masked: no password, a SQLite file as the fleet file names it, #schema for a tenant
    url: str  # what DATABASE_URL gets: may hold the password, never printed
    schema: str | None = None
    sqlite_path: Path | None = None
    server: ServerUrl | None = None  # a PostgreSQL target's database, as the fleet's own look connects

    @property
    def database(self) -> str:
        """The server database this target lives in (its masked URL); a SQLite file is its own."""
        return self.shown.partition("#")[0]


def expand(base: Path, where: str, group: str, entry: object) -> list[Target]:
    """The targets one entry of a group's ``targets`` names, in sorted order for a pattern."""
    if isinstance(entry, str):
        if entry.startswith("sqlite:"):
            return _sqlite_targets(base, where, group, entry)
        return _server_targets(where, group, {"url": entry})
    if isinstance(entry, dict):
        return _server_targets(where, group, entry)
    raise FleetError(f"{where}: {type(entry).__name__} is not a target; give a URL or a {{url = ...}} table")


def _sqlite_targets(base: Path, where: str, group: str, url: str) -> list[Target]:
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise FleetError(f"{where}: {url!r} is not a SQLite file URL; write sqlite:///path/to/file.db")
    spelled = url[len("sqlite:///") :]
    if "?" in spelled or spelled.startswith("file:"):
        raise FleetError(
            f"{where}: {url!r}: a fleet's SQLite target is a file path or a glob, without parameters"
        )
    absolute = Path(spelled) if Path(spelled).is_absolute() else base / spelled
    if any(char in spelled for char in GLOB_CHARS):
        pattern = spelled if Path(spelled).is_absolute() else os.path.join(glob.escape(str(base)), spelled)
        # Sorted by their parts, as paths sort (a/x before a-b/x), without a Path for each.
        paths = _regular_files(sorted(glob.glob(pattern), key=lambda found: found.split(os.sep)))
        if not paths:
            raise FleetError(f"{where}: {url!r} matches no file (relative to {base})")
    else:
        paths = [os.path.realpath(absolute)]
    beneath = os.path.join(os.path.realpath(base), "")  # the fleet file's folder, resolved, with its /
    return [
        Target(
            group,
            "sqlite:///" + _shown(path.removeprefix(beneath)),
            "sqlite:///" + _escaped(path),
            None,
            Path(path),
        )
        for path in paths
    ]


def _shown(name: str) -> str:
    """A file's name as the table, the progress lines and the report show it: a byte that is not
    UTF-8 as \\xff, which any terminal, log or JSON reader takes (printed as it is, it fails)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _escaped(path: str) -> str:
    """A path as a SQLite URL's database part, which SQLAlchemy decodes back to the very file.

    Unescaped, a ? would start the URL's parameters and %41 name another file (A).
    Only those two: SQLAlchemy decodes no other part of it, and leaves a name
    that is not UTF-8 as it is, where percent-encoding it would name another.
    """
    return path.replace("%", "%25").replace("?", "%3F")


def _regular_files(found: list[str]) -> list[str]:
    """The regular files among a glob's matches, each resolved as ``os.path.realpath`` resolves it.

    A fleet's glob may match a thousand files in one folder: each costs one
    ``lstat`` here, and its folder is resolved once, not once per file.
    """
    folders: dict[str, str] = {}
    files = []
    for name in found:
        with suppress(OSError):
            mode = os.lstat(name).st_mode
            if stat.S_ISLNK(mode):  # resolved whole, and kept only if it leads to a regular file
                real = os.path.realpath(name)
                if stat.S_ISREG(os.stat(real).st_mode):
                    files.append(real)
            elif stat.S_ISREG(mode):
                folder, file = os.path.split(name)
                if folder not in folders:
                    folders[folder] = os.path.realpath(folder)
                files.append(os.path.join(folders[folder], file))
    return files


def _server_targets(where: str, group: str, entry: dict[str, Any]) -> list[Target]:
    unknown = sorted(set(entry) - TABLE_KEYS)
    if unknown:
        raise FleetError(
            f"{where}: unknown key {unknown[0]!r}; a target table takes url, password_env, schemas"
        )
    raw = entry.get("url")
    if not isinstance(raw, str) or not raw:
        raise FleetError(f"{where}: url is missing; give the database URL without its password")
    server = servers.parse(where, raw, entry.get("password_env"))
    shown, full = server.shown, server.full
    schemas = entry.get("schemas")
    if schemas is None:
        return [Target(group, shown, full, server=server)]
    patterns = [schemas] if isinstance(schemas, str) else schemas
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise FleetError(f"{where}: schemas is neither a schema name, a list of them, nor a * pattern")
    for pattern in patterns:
        _check_pattern(where, pattern)
    names: list[str] = []
    existing = _schemas(where, server) if any("*" in p for p in patterns) else []
    for pattern in patterns:
        matched = (
            sorted(n for n in existing if fnmatch.fnmatchcase(n, pattern)) if "*" in pattern else [pattern]
        )
        if not matched:
            raise FleetError(f"{where}: schemas {pattern!r} matches no schema in {shown}")
        names.extend(n for n in matched if n not in names)
    return [Target(group, f"{shown}#{name}", full, name, server=server) for name in names]


def _check_pattern(where: str, pattern: str) -> None:
    name = pattern.replace("*", "")
    if (
        not pattern
        or not pattern.isascii()
        or not all(c.isalnum() or c == "_" for c in name)
        or pattern[0].isdigit()
        or len(pattern.encode()) > MAX_IDENTIFIER_BYTES
        or ("*" not in pattern and pattern.lower().startswith("pg_"))
    ):
        raise FleetError(
            f"{where}: schemas {pattern!r} is not a schema name (ASCII letters, digits and _, "
            "not first a digit, not pg_*) nor such a name with * in it"
        )


def _schemas(where: str, server: servers.ServerUrl) -> list[str]:
    """The database's own schemas (PostgreSQL's aside), in one query on one connection."""
    try:
        with servers.connected(server, keep=True) as conn:  # for the look at head, if one follows
            rows = conn.rows(
                "SELECT nspname FROM pg_namespace "
                "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
            )
    except LibpqError as exc:
        said = f"cannot list the schemas of {server.shown}: {servers.reason(server, exc)}"
        raise FleetError(f"{where}: {said}; nothing was run") from None
    return [str(name) for (name,) in rows]

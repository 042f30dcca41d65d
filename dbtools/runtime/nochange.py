"""``make check`` and ``make migration`` with nothing changed, answered with the standard library alone.

The everyday loop runs them again and again with nothing changed, and
importing SQLAlchemy, Alembic and the models to learn that costs most of a
second, twice Django's ``makemigrations``. So a full ``make check`` that
found the models and a SQLite database alike (or a ``make migration`` that
wrote nothing) records the moment, as the no-op upgrade does
(``dbtools.runtime.fastpath``), keyed by the checkout and the settings. The
next ``make check`` or ``make migration`` answers from the record only when

- everything the fast path's fingerprint covers (migrations, env.py,
  alembic.ini's content, this package) and every file under ``models/`` and
  ``schema/`` has the name, size and time recorded;
- the database is the recorded SQLite file, in its recorded schema
  (``PRAGMA schema_version``, which every schema change moves) and at its
  recorded heads;
- and, for ``make migration``, ``schema/postgresql.sql`` is at those heads,
  so the full run would print no note about PostgreSQL's facts either.

Anything else, or any error, and the full run compares, as it always did.
Models that import code from outside ``models/`` are not covered: such an
edit is seen by the next change the record does cover, or by ``rm -r
.dbtools``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, suppress
from pathlib import Path

from dbtools import paths
from dbtools.paths import CACHE, ROOT, SCHEMA, SQLITE_HEADER
from dbtools.runtime import fastpath

FORMAT = 2
MAX_RECORD_BYTES = 1 << 16
NOTHING = {
    "check": "No new upgrade operations detected.",
    "migration": "No changes detected; no migration written.",
}
WHY = "nothing changed since the last comparison found the models and the database alike"
SNAPSHOT_HEAD = re.compile(r"^-- PostgreSQL schema at migration head (?P<heads>[^.]+)\.$", re.MULTILINE)


def answer(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str | None:
    """What ``argv`` prints when the record proves nothing changed; None hands over to the full run."""
    command = _command(argv)
    if command is None:
        return None
    try:
        record = _load(environ)
        if record is None or record.get("fingerprint") != fingerprint():
            return None
        database = Path(str(record["database"]))
        state = _state(database)
        if state is None or state != [record["schema_version"], record["heads"]]:
            return None
        if command == "migration" and _snapshot_heads() != record["heads"]:
            return None
    except Exception:  # whatever the record or the database holds, the full run decides
        return None
    return NOTHING[command]


def remember(database: Path | None, seen: str, environ: Mapping[str, str] = os.environ) -> None:
    """After a full comparison found nothing: record the database's state for the next one.

    ``seen`` is the fingerprint taken before the run read anything: files edited
    meanwhile never match it.
    """
    if database is None:
        return
    with suppress(Exception):  # a record is an optimisation: never a reason to fail the command
        state = _state(database)
        if state is None:
            return
        schema_version, heads = state
        record = {
            "format": FORMAT,
            "key": _key(environ),
            "fingerprint": seen,
            "database": str(database),
            "schema_version": schema_version,
            "heads": heads,
        }
        target = _record_file(environ)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        try:
            paths.write_private(partial, json.dumps(record))
            os.replace(partial, target)
        except OSError:
            with suppress(OSError):
                partial.unlink()


def fingerprint() -> str:
    """The upgrade fast path's fingerprint, and every file under models/ and schema/."""
    digest = hashlib.sha256(fastpath.fingerprint().encode())
    for path in _inputs():
        info = path.stat()
        digest.update(f"{path.relative_to(ROOT)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _inputs() -> Iterator[Path]:
    for folder in (ROOT / "models", ROOT / SCHEMA):
        if folder.is_dir():
            yield from sorted(path for path in folder.rglob("*") if "__pycache__" not in path.parts)


def _command(argv: Sequence[str]) -> str | None:
    """``check``, or a ``migration`` without renames given; None for anything else."""
    if list(argv) == ["check"]:
        return "check"
    if argv and argv[0] == "migration" and "--renames=" in argv[1:]:
        others = [arg for arg in argv[1:] if arg != "--renames=" and not arg.startswith("--message=")]
        return "migration" if not others else None
    return None


def _state(database: Path) -> list[object] | None:
    """The SQLite file's schema version and heads, read without writing; None if not a plain SQLite file."""
    info = database.stat()
    if not stat.S_ISREG(info.st_mode):
        return None
    with database.open("rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return None
    uri = f"{database.as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)) as conn:
        conn.execute("BEGIN")  # one snapshot for both reads
        (schema_version,) = conn.execute("PRAGMA schema_version").fetchone()
        heads = sorted(str(row[0]) for row in conn.execute("SELECT version_num FROM alembic_version"))
        conn.execute("COMMIT")
    return [int(schema_version), heads]


def _snapshot_heads() -> list[str] | None:
    """The heads schema/postgresql.sql was written at (its first line says)."""
    found = SNAPSHOT_HEAD.search((ROOT / SCHEMA / "postgresql.sql").read_text())
    return sorted(found["heads"].split(", ")) if found else None


def _key(environ: Mapping[str, str]) -> str:
    """The fast path's digest of the checkout and the settings (never their values)."""
    return fastpath.key(environ)


def _record_file(environ: Mapping[str, str]) -> Path:
    return CACHE / f"compared-{_key(environ)[:16]}.json"


def _load(environ: Mapping[str, str]) -> dict[str, object] | None:
    """The record for this checkout and these settings, if it has the shape remember() writes."""
    fd = os.open(_record_file(environ), os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not wait
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        with open(fd, "rb", closefd=False) as handle:
            raw = json.loads(handle.read())
    finally:
        os.close(fd)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("key") != _key(environ):
        return None
    if not (
        isinstance(raw.get("fingerprint"), str)
        and isinstance(raw.get("database"), str)
        and Path(raw["database"]).is_absolute()
        and isinstance(raw.get("schema_version"), int)
        and isinstance(raw.get("heads"), list)
        and all(isinstance(head, str) for head in raw["heads"])
    ):
        return None
    return raw

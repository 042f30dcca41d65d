"""The no-op ``make upgrade``, proven with the standard library alone.

Nearly every ``make upgrade`` (each deploy, container start, CI job) has
nothing to do, and importing SQLAlchemy and Alembic to learn that is almost
all of its cost. The full run, after it has brought a SQLite database to
head, records what it learnt from Alembic's own graph (the heads, and each
revision's file) in a cache keyed by a fingerprint of everything that could
change the answer: the migration files, env.py, alembic.ini (its content:
the database URL may live there), this package, and the settings. The next
run answers from the cache only when

- the record is a regular file of the expected shape, written for this
  checkout and these settings (not copied from another);
- the fingerprint and the settings are exactly as recorded;
- the database file is there, a SQLite file, readable, and as writable as
  the full run requires;
- no other connection holds its write lock (the full run would wait);
- its ``alembic_version`` rows are the recorded heads;
- ``alembic_checksums`` records exactly the recorded revisions, and each
  checksum matches its file's, as the full run matches them (``digest.matches``;
  a legacy record of a re-pointed file is left to the full run, which reads
  the text it keeps). A database that skipped a migration (a branch re-pointed
  after it ran there) has no record for it, so the full run refuses it.

Anything else, or any error, and the full run decides, as it always did:
the fast path may say "nothing to do", never "refused", and never fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path

from dbtools import paths
from dbtools.paths import CACHE, ENV, INI, ROOT, SQLITE_HEADER, VERSIONS
from dbtools.runtime.digest import accepted, read_script
from dbtools.settings import NAMES

FORMAT = 3
# A record holds a line per migration; one this large was not written by remember().
MAX_RECORD_BYTES = 1 << 24


@dataclass(frozen=True)
class Record:
    """What a full run that reached head wrote, checked for shape before anything trusts it."""

    key: str  # the digest of the checkout and the settings it was written for (key())
    fingerprint: str
    database: Path
    heads: list[str]
    revisions: dict[str, str]  # revision -> its file's name in migrations/versions


def nothing_to_do(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str | None:
    """What to say when ``argv`` is a no-op ``upgrade`` to head; None hands over to the full run."""
    if list(argv) not in (["upgrade"], ["upgrade", "head"]):
        return None
    record = at_head(environ)
    if record is None:
        return None
    return f"{record.database} is at head {', '.join(record.heads)}; nothing to do."


@dataclass(frozen=True)
class Checkout:
    """What every look at this checkout shares: its fingerprint, and each migration file's checksums.

    A single run looks once; a fleet looks at a thousand files, and takes this
    once for them all (``dbtools.fleet.current``), so the checkout's 75-odd
    files are stat'ed once and each migration file is read and hashed once,
    not once per database. Taken before any migration file is read: a file
    edited meanwhile changes the fingerprint, and no later look matches it.
    """

    fingerprint: str
    # A migration file's name -> the two checksums a run may have recorded for it (digest.matches).
    checksums: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False)

    @classmethod
    def now(cls) -> Checkout:
        return cls(fingerprint())

    def accepted(self, name: str) -> tuple[str, str]:
        """The checksums a run may have recorded for migrations/versions/``name`` (``digest.accepted``)."""
        known = self.checksums.get(name)
        if known is None:
            known = self.checksums[name] = accepted(read_script(VERSIONS / name))
        return known

    def matches(self, recorded: str, name: str) -> bool:
        """Whether ``recorded`` is the checksum of migrations/versions/``name``, as ``digest.matches``."""
        return recorded in self.accepted(name)


def at_head(environ: Mapping[str, str], checkout: Checkout | None = None) -> Record | None:
    """The record of these settings, when the database it names is still at its heads; else None.

    Every rule of the module's docstring; None hands over to the full run. ``checkout``:
    one taken for many looks (a fleet's); by default, taken now, after the record is found.
    """
    try:
        record = _load(environ)
        if record is None:
            return None
        checkout = checkout or Checkout.now()
        if record.fingerprint != checkout.fingerprint:
            return None
        heads = _heads_if_current(record.database, record.revisions, checkout)
    except Exception:  # whatever the record or the database holds, the full run decides
        return None
    return record if heads == record.heads else None


def recorded(database: Path, seen: str) -> bool:
    """Whether the record for these settings already describes ``database`` at fingerprint ``seen``."""
    try:
        record = _load(os.environ)
    except Exception:  # a record that cannot be read is written anew
        return False
    return record is not None and record.fingerprint == seen and record.database == database


def remember(database: Path, heads: Sequence[str], files: Mapping[str, str], seen: str) -> None:
    """Record, after a full run reached head, what the next no-op run may rely on.

    ``seen`` is the fingerprint taken *before* the run read the migration
    files: if they changed meanwhile, the record never matches and is harmless.
    """
    record = {
        "format": FORMAT,
        "key": key(os.environ),
        "fingerprint": seen,
        "database": str(database),
        "heads": sorted(heads),
        "revisions": dict(sorted(files.items())),
    }
    target = _cache_file(os.environ)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    try:
        paths.write_private(partial, json.dumps(record, indent=1))
        os.replace(partial, target)
    except OSError:
        # A read-only checkout, or something not ours at the record's path (a directory):
        # every run takes the full path, as before, and leaves nothing behind.
        with suppress(OSError):
            partial.unlink()


def fingerprint() -> str:
    """Names, sizes and modification times of every file that shapes a run's answer.

    And alembic.ini's content: an edit of its database URL that keeps the
    size and the time (app.db to app.dc) names another database.
    """
    digest = hashlib.sha256(INI.read_bytes())
    for path in _inputs():
        info = path.stat()
        digest.update(f"{path.relative_to(ROOT)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _inputs() -> Iterator[Path]:
    yield INI
    yield ENV
    # Any new, removed or edited entry; Python's own bytecode cache aside.
    yield from sorted(path for path in VERSIONS.iterdir() if path.name != "__pycache__")
    yield from sorted((ROOT / "dbtools").rglob("*.py"))


def key(environ: Mapping[str, str]) -> str:
    """The checkout and the settings a record is written for, as a digest.

    A digest, never the values: DATABASE_URL may hold a password, and the
    record is a file in the checkout.
    """
    # Per checkout too: a copied project keeps its files' times, not its database.
    settings = json.dumps([str(ROOT), *(environ.get(name) for name in NAMES)])
    return hashlib.sha256(settings.encode()).hexdigest()


def _cache_file(environ: Mapping[str, str]) -> Path:
    return CACHE / f"upgrade-{key(environ)[:16]}.json"


def _load(environ: Mapping[str, str]) -> Record | None:
    """The record for this checkout and these settings; None if there is none, or not one of ours."""
    # Non-blocking: a FIFO at the path must not wait for a writer. Only a regular file is read.
    fd = os.open(_cache_file(environ), os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        with open(fd, "rb", closefd=False) as handle:
            raw = json.loads(handle.read())  # RecursionError when nested deep: caught by the callers
    finally:
        os.close(fd)
    return _parse(raw, environ)


def _parse(raw: object, environ: Mapping[str, str]) -> Record | None:
    """A record only if every field has the shape remember() writes; None otherwise."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        return None
    if raw.get("key") != key(environ):
        return None  # written for another checkout or other settings, then copied here
    fingerprint, database, heads, revisions = (
        raw.get(name) for name in ("fingerprint", "database", "heads", "revisions")
    )
    if not (isinstance(fingerprint, str) and isinstance(database, str) and Path(database).is_absolute()):
        return None
    if not (isinstance(heads, list) and all(isinstance(head, str) for head in heads)):
        return None
    if not isinstance(revisions, dict) or not all(
        isinstance(revision, str) and isinstance(name, str) and _plain_name(name)
        for revision, name in revisions.items()
    ):
        return None
    return Record(raw["key"], fingerprint, Path(database), heads, revisions)


def _plain_name(name: str) -> bool:
    """A file directly in migrations/versions: never a path reaching elsewhere."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _heads_if_current(database: Path, revisions: Mapping[str, str], checkout: Checkout) -> list[str] | None:
    """The database's revisions, when every applied file still matches its checksum."""
    info = database.stat()
    writable = os.access(database, os.R_OK | os.W_OK) and os.access(database.parent, os.W_OK)
    if not stat.S_ISREG(info.st_mode) or not writable:
        return None  # the full run refuses these, in its own words
    with database.open("rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return None
    # The write lock the full run takes first (BEGIN IMMEDIATE), with timeout=0: a writer
    # holding it, even one readers may still read past, means the full run must wait its
    # turn. Nothing is written; closing rolls the empty transaction back.
    uri = f"{database.as_uri()}?mode=rw"
    with closing(sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # and one snapshot for both tables
        heads = sorted(row[0] for row in conn.execute("SELECT version_num FROM alembic_version"))
        checksums = dict(conn.execute("SELECT revision, checksum FROM alembic_checksums").fetchall())
    if checksums.keys() != revisions.keys():
        return None
    for revision, name in revisions.items():
        if not checkout.matches(checksums[revision], name):
            return None
    return heads

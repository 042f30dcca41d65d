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
  after it ran there) has no record for it, so the full run refuses it. Once a
  squash's old files are pruned, a database that ran them keeps their records:
  those, and its record of the squash's own revision, must be the checksums
  the squash's ``replaces`` lists, as the full run accepts them.

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
from dbtools.paths import CACHE, CHECKSUM_TABLE, ENV, INI, ROOT, SQLITE_HEADER, VERSION_TABLE, VERSIONS
from dbtools.runtime.digest import accepted, read_script
from dbtools.settings import NAMES

FORMAT = 4
# Both tables the full run reads, tagged with their names: the applied heads, then each checksum.
RECORDS = (
    f"SELECT '{VERSION_TABLE}', version_num, NULL FROM {VERSION_TABLE} "
    f"UNION ALL SELECT '{CHECKSUM_TABLE}', revision, checksum FROM {CHECKSUM_TABLE}"
)
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
    # Revisions pruned squashes replaced -> the checksum their old file had (make squash prune=1).
    replaced: dict[str, str]


def nothing_to_do(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str | None:
    """What to say when ``argv`` is a no-op ``upgrade`` to head; None hands over to the full run."""
    if list(argv) not in (["upgrade"], ["upgrade", "head"]):
        return None
    try:
        record = _load(environ)
        if record is None:
            return None  # no fingerprint taken: the full run is coming anyway
        checkout = Checkout.now()
    except Exception:  # whatever the record holds, the full run decides
        return None
    if record.fingerprint != checkout.fingerprint or not still_at_head(record, checkout):
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


def record_for(environ: Mapping[str, str], checkout: Checkout) -> Record | None:
    """The record of these settings, written at ``checkout``'s fingerprint; None: the full run decides.

    For a fleet, which holds one ``checkout`` for all its files (``dbtools.fleet.current``);
    ``still_at_head`` then says whether the database it names is still there.
    """
    try:
        record = _load(environ)
    except Exception:  # whatever the record holds, the full run decides
        return None
    return record if record is not None and record.fingerprint == checkout.fingerprint else None


def still_at_head(record: Record, checkout: Checkout) -> bool:
    """Whether the database ``record`` names is at its heads, on every rule of the module's docstring."""
    try:
        return _heads_if_current(record.database, record.revisions, record.replaced, checkout) == record.heads
    except Exception:  # whatever the database holds, the full run decides
        return False


def recorded(database: Path, seen: str) -> bool:
    """Whether the record for these settings already describes ``database`` at fingerprint ``seen``."""
    try:
        record = _load(os.environ)
    except Exception:  # a record that cannot be read is written anew
        return False
    return record is not None and record.fingerprint == seen and record.database == database


def remember(
    database: Path,
    heads: Sequence[str],
    files: Mapping[str, str],
    seen: str,
    replaced: Mapping[str, str] | None = None,
) -> None:
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
        "replaced": dict(sorted((replaced or {}).items())),
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
    return Path(_cache_file_of(key(environ)))


def _cache_file_of(digest: str) -> str:
    return f"{CACHE}{os.sep}upgrade-{digest[:16]}.json"  # a string: a fleet builds a thousand


def _load(environ: Mapping[str, str]) -> Record | None:
    """The record for this checkout and these settings; None if there is none, or not one of ours."""
    digest = key(environ)
    # Non-blocking: a FIFO at the path must not wait for a writer. Only a regular file is read.
    fd = os.open(_cache_file_of(digest), os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        # One read: a short one is broken JSON, so the full run decides. RecursionError when
        # nested deep: caught by the callers.
        raw = json.loads(os.read(fd, info.st_size + 1))
    finally:
        os.close(fd)
    return _parse(raw, digest)


def _parse(raw: object, digest: str) -> Record | None:
    """A record only if every field has the shape remember() writes, for ``digest`` (``key``); else None."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        return None
    if raw.get("key") != digest:
        return None  # written for another checkout or other settings, then copied here
    fingerprint, database, heads, revisions, replaced = (
        raw.get(name) for name in ("fingerprint", "database", "heads", "revisions", "replaced")
    )
    if not (isinstance(fingerprint, str) and isinstance(database, str) and os.path.isabs(database)):
        return None
    if not (isinstance(heads, list) and all(isinstance(head, str) for head in heads)):
        return None
    if not isinstance(revisions, dict) or not all(
        isinstance(revision, str) and isinstance(name, str) and _plain_name(name)
        for revision, name in revisions.items()
    ):
        return None
    if not isinstance(replaced, dict) or not all(
        isinstance(revision, str) and isinstance(checksum, str) for revision, checksum in replaced.items()
    ):
        return None
    return Record(raw["key"], fingerprint, Path(database), heads, revisions, replaced)


def _plain_name(name: str) -> bool:
    """A file directly in migrations/versions: never a path reaching elsewhere."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _heads_if_current(
    database: Path, revisions: Mapping[str, str], replaced: Mapping[str, str], checkout: Checkout
) -> list[str] | None:
    """The database's revisions, when every applied file still matches its checksum."""
    # os's calls, not pathlib's: a fleet makes them for each of a thousand files (dbtools.fleet.current).
    name = os.fspath(database)
    info = os.stat(name)
    writable = os.access(name, os.R_OK | os.W_OK) and os.access(os.path.dirname(name), os.W_OK)
    if not stat.S_ISREG(info.st_mode) or not writable:
        return None  # the full run refuses these, in its own words
    fd = os.open(name, os.O_RDONLY)
    try:
        if os.read(fd, len(SQLITE_HEADER)) != SQLITE_HEADER:
            return None
    finally:
        os.close(fd)
    # The write lock the full run takes first (BEGIN IMMEDIATE), with timeout=0: a writer
    # holding it, even one readers may still read past, means the full run must wait its
    # turn. Nothing is written; closing rolls the empty transaction back.
    uri = f"{database.as_uri()}?mode=rw"
    with closing(sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # and one snapshot for both tables, read by one statement
        rows = conn.execute(RECORDS).fetchall()
    heads = sorted(first for table, first, _ in rows if table == VERSION_TABLE)
    checksums = {first: second for table, first, second in rows if table == CHECKSUM_TABLE}
    extra = checksums.keys() - revisions.keys()  # only the records of a pruned squash's old files
    if revisions.keys() - checksums.keys() or any(checksums[rev] != replaced.get(rev) for rev in extra):
        return None
    for revision, name in revisions.items():
        recorded = checksums[revision]
        if not checkout.matches(recorded, name) and recorded != replaced.get(revision):
            return None
    return heads

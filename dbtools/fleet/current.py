"""A fleet's targets already at head, recognised in the fleet's own process, without a run each.

Most fleet upgrades have nothing to do for most targets, and a run per target
(a fork, a connection, the lock, Alembic's context) is most of their cost. So
before a group of ``make upgrade fleet=`` (to head) starts, the fleet asks:

- for each SQLite file, the single run's own no-op fast path
  (``dbtools.runtime.fastpath``), with the settings that file's run would have,
  on one look at the checkout (``fastpath.Checkout``: its fingerprint, each
  migration file's checksums) taken once for the whole fleet;
- for each PostgreSQL database, on one connection, which of its target schemas
  hold ``alembic_version`` and ``alembic_checksums`` (one catalog query), then
  every such schema's rows (one ``UNION ALL`` query), and which migration locks
  are held (``pg_locks``).

A target is at head only on the fast path's terms: its ``alembic_version`` is
the history's heads, ``alembic_checksums`` records exactly the history's
revisions and each checksum matches its file, and no run holds or waits for its
lock (that run goes first). The heads and each revision's file come from a
record keyed by the fast path's fingerprint of the checkout, so Alembic's script
directory is loaded only when a migration file (or env.py, or this package)
changed. Anything else, or any error, and the target's own run decides, as it
always did: this may say "at head", never "failed".
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from dbtools import paths
from dbtools.fleet import servers, split
from dbtools.fleet.servers import ServerUrl
from dbtools.fleet.targets import Target
from dbtools.paths import CACHE, CHECKSUM_TABLE, VERSION_TABLE, VERSIONS
from dbtools.runtime import fastpath
from dbtools.runtime.lockkeys import lock_key
from dbtools.settings import DATABASE_URL_VAR, SCHEMA_VAR, quoted_schema

FORMAT = 1
RECORD = "fleet-history.json"
# The reason a target answered here has in the report: no run of its own was started.
SQLITE_REASON = "at head: the no-op fast path answered, no run"
POSTGRESQL_REASON = "at head: one look at the database answered, no run"
# From this many target schemas in a database on, a second connection reads half of them.
SPLIT_FROM = 100
# The schemas whose tables one query reads: a query naming every table of 300 schemas takes
# half as long again to plan as six naming 50 schemas' each (measured: 50 ms against 35 ms).
SCHEMAS_PER_QUERY = 50
# One look at a database: its default schema, which of the target schemas (or the default one)
# hold the version and checksum tables, and every advisory lock held or waited for.
LOOK = """
SELECT 'schema', current_schema(), NULL
UNION ALL
SELECT 'table', n.nspname || '.' || c.relname, NULL
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname IN ($1, $2) AND c.relkind IN ('r', 'p')
    AND (n.nspname IN (SELECT json_array_elements_text(CAST($3 AS json))) OR n.nspname = current_schema())
UNION ALL
SELECT 'lock', CAST(l.classid AS text), CAST(l.objid AS text)
    FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True)
class History:
    """What "at head" means for this checkout: the heads, and every revision's file, read once per fleet."""

    heads: list[str]
    files: dict[str, str]  # revision -> its file's name in migrations/versions
    checkout: fastpath.Checkout  # the fingerprint, and each file's checksums, shared by every look

    @property
    def joined(self) -> str:
        """The heads as the report shows a revision: sorted, comma-joined."""
        return ",".join(self.heads)

    def matches(self, heads: list[str], recorded: Mapping[str, str]) -> bool:
        """A database at these heads, whose checksum table records exactly these files, unedited."""
        if heads != self.heads or recorded.keys() != self.files.keys():
            return False
        return all(self.checkout.matches(sum_, self.files[revision]) for revision, sum_ in recorded.items())


def at_head(targets: Iterable[Target], parallel: int = 1) -> tuple[set[Target], str]:
    """Those of ``targets`` already at head (see the module's docstring), and the heads, comma-joined.

    The others need their run; so do all of them when the history cannot be read here.
    SQLite files are looked at in up to ``parallel`` processes (the group's bound).
    """
    history = None
    with suppress(Exception):  # a history Alembic cannot read: each run says why
        history = load_history(fastpath.Checkout.now())
    if history is None:
        return set(), ""
    targets = list(targets)
    found: set[Target] = set()
    on_server: dict[ServerUrl, list[Target]] = {}
    for target in targets:
        if target.server is not None:
            on_server.setdefault(target.server, []).append(target)
    for server, on_it in on_server.items():
        with suppress(Exception):  # unreachable, no rights, ...: each run says why
            found.update(_postgresql_at_head(server, on_it, history, parallel))
    servers.close_kept()  # before the SQLite look forks: no child holds a server connection
    files = [t for t in targets if t.sqlite_path is not None]
    found.update(
        files[i] for i in split.found_across_processes(files, partial(_sqlite_at_head, history), parallel)
    )
    return found, history.joined


def _sqlite_at_head(history: History, targets: Sequence[Target]) -> set[int]:
    """The single run's fast path for each file, with the settings its run gets, on the fleet's checkout.

    Which of ``targets`` (their indexes) are at head. A file's record (keyed on
    those settings, its URL among them) must name that very file and the
    history's heads: anything else, and its run decides. All the records are
    read first, then the databases: a sixth less CPU than alternating, measured
    on a thousand files.
    """
    # What each file's run gets (fleet.runner._child): the fleet's environment, its own URL, no schema.
    environ = {name: value for name, value in os.environ.items() if name != SCHEMA_VAR}
    records = [fastpath.record_for({**environ, DATABASE_URL_VAR: t.url}, history.checkout) for t in targets]
    return {
        index
        for index, (target, record) in enumerate(zip(targets, records, strict=True))
        if record is not None
        and record.database == target.sqlite_path
        and record.heads == history.heads
        and fastpath.still_at_head(record, history.checkout)
    }


def _postgresql_at_head(
    server: ServerUrl, targets: list[Target], history: History, parallel: int
) -> set[Target]:
    # A second connection reads half the schemas at once: each table read costs the server,
    # in a new backend, about 60 µs to open, and two backends open them side by side.
    helper = _Helper(server) if parallel > 1 and len(targets) >= SPLIT_FROM else None
    try:
        with servers.connected(server) as conn:
            looked = conn.rows(
                LOOK, [VERSION_TABLE, CHECKSUM_TABLE, json.dumps([t.schema for t in targets if t.schema])]
            )
            default = next((first for kind, first, _ in looked if kind == "schema"), None) or ""
            tables = {first for kind, first, _ in looked if kind == "table"}
            held = {(int(str(a)), int(str(b))) for kind, a, b in looked if kind == "lock"}
            schema_of = {t: t.schema or default for t in targets}
            ready = [
                t
                for t in targets
                if f"{schema_of[t]}.{VERSION_TABLE}" in tables
                and f"{schema_of[t]}.{CHECKSUM_TABLE}" in tables
                and _lock_parts(lock_key(t.schema)) not in held
            ]
            schemas = sorted({schema_of[t] for t in ready})
            half = len(schemas) // 2 if helper is not None else len(schemas)
            if helper is not None:
                helper.start_reading(schemas[half:])
            rows = _read(conn, schemas[:half])
    finally:
        helped = helper.rows() if helper is not None else []  # joined: its connection is closed
    versions: dict[str, list[str]] = {s: [] for s in schemas}
    recorded: dict[str, dict[str, str]] = {s: {} for s in schemas}
    for start, part in ((0, rows), (half, helped)):
        for index, kind, first, second in part:
            if kind == "v":
                versions[schemas[start + index]].append(first)
            else:
                recorded[schemas[start + index]][first] = second or ""  # NULL: no file's checksum
    return {t for t in ready if history.matches(sorted(versions[schema_of[t]]), recorded[schema_of[t]])}


def _read(conn: servers.Reader, schemas: list[str]) -> list[tuple[int, str, str, str | None]]:
    """Every schema's revisions and checksums, each row tagged with the schema's index in ``schemas``."""
    return [
        (start + int(str(index)), str(kind), "" if first is None else first, second)
        for start in range(0, len(schemas), SCHEMAS_PER_QUERY)
        for index, kind, first, second in conn.rows(_union(schemas[start : start + SCHEMAS_PER_QUERY]))
    ]


class _Helper:
    """A second connection, on a thread: it connects while the first reads the catalog, then reads
    the schemas it is handed. Any failure, and it has no rows: its schemas go to their runs."""

    def __init__(self, server: ServerUrl) -> None:
        self._server = server
        self._schemas: list[str] = []
        self._handed = threading.Event()
        self._rows: list[tuple[int, str, str, str | None]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with suppress(Exception), servers.connected(self._server) as conn:
            self._handed.wait()
            self._rows = _read(conn, self._schemas)

    def start_reading(self, schemas: list[str]) -> None:
        self._schemas = schemas
        self._handed.set()

    def rows(self) -> list[tuple[int, str, str, str | None]]:
        """Its rows, once its thread ended (and closed its connection); none if it was handed none."""
        self._handed.set()
        self._thread.join()
        return self._rows


def _lock_parts(key: int) -> tuple[int, int]:
    """A bigint advisory key as pg_locks shows it: its high and low 32 bits, unsigned (classid, objid)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def _union(schemas: list[str]) -> str:
    """One query for every schema's revisions and checksums, each row tagged with its schema's index."""
    parts = []
    for index, schema in enumerate(schemas):
        quoted = quoted_schema(schema)
        parts.append(f"SELECT {index}, 'v', CAST(version_num AS text), NULL FROM {quoted}.{VERSION_TABLE}")
        parts.append(f"SELECT {index}, 'c', revision, checksum FROM {quoted}.{CHECKSUM_TABLE}")
    return "\nUNION ALL ".join(parts)


# --- the history's heads and checksums, recorded per checkout -------------------------------------


def load_history(checkout: fastpath.Checkout) -> History | None:
    """The heads and files for the migration files as they are now; None if they cannot be known.

    From the record when the fast path's fingerprint (``checkout``'s, taken before
    anything is read: an edit meanwhile never matches) is unchanged; else from
    Alembic's script directory (the graph), recorded for the next fleet.
    """
    record = CACHE / RECORD
    with suppress(Exception):
        raw = json.loads(record.read_text())
        if raw.get("format") == FORMAT and raw.get("fingerprint") == checkout.fingerprint:
            return _history(raw["heads"], raw["files"], checkout)
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(paths.alembic_config())
    files = {rev.revision: Path(str(rev.path)) for rev in script.walk_revisions()}
    if any(file.parent != VERSIONS for file in files.values()):
        return None  # a file elsewhere (a second versions folder): each run decides
    heads = sorted(script.get_heads())
    names = {revision: file.name for revision, file in sorted(files.items())}
    partial = record.with_suffix(f".{os.getpid()}.partial")
    fields = {"format": FORMAT, "fingerprint": checkout.fingerprint, "heads": heads, "files": names}
    try:
        paths.write_private(partial, json.dumps(fields))
        os.replace(partial, record)
    except OSError:  # a read-only checkout: the next fleet reads the graph again
        with suppress(OSError):
            partial.unlink()
    return _history(heads, names, checkout)


def _history(heads: Any, files: Any, checkout: fastpath.Checkout) -> History:
    """A history record's fields, checked for shape, every file read (and hashed) once, here."""
    if not (isinstance(heads, list) and isinstance(files, dict)):
        raise ValueError("not a history record")
    for name in files.values():
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            raise ValueError("not a migration file's name")
        checkout.accepted(name)  # a file gone or unreadable: no history, each run decides
    names = {str(revision): name for revision, name in files.items()}
    return History(sorted(str(head) for head in heads), names, checkout)

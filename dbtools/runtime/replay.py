"""A database's schema and rows at one revision, as statements that build them again (``make squash``).

The squash is not rendered from the models or from reflection, which lose
what the database knows and SQLAlchemy does not (SQLite's DDL as written,
expression indexes, PostgreSQL's enum types, sequence widths and values,
comments). It is what the databases themselves say after the old migrations
ran on empty scratch databases: SQLite's ``iterdump`` (its stored DDL, then
the rows), and ``pg_dump`` with the rows as INSERTs and each sequence's
``setval``. Replaying that on an empty database builds the same thing, which
``prove`` then checks by dumping a second scratch database built by the squash.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL, Connection

from dbtools import pgserver, settings
from dbtools.runtime import scratch, snapshot, squashes
from dbtools.target import Target

_BOOKKEEPING = re.compile(
    r'^(?:CREATE TABLE|INSERT INTO|CREATE (?:UNIQUE )?INDEX \S+ ON) "?(?:{})"?\b'.format(
        "|".join(snapshot.BOOKKEEPING)
    )
)
UNWRITTEN = "nothing was written"
_NOT_SCHEMA = ("BEGIN TRANSACTION;", "COMMIT;", "PRAGMA ")
# pg_dump qualifies every name with its schema, in literals too (nextval('public.users_id_seq')); the
# squash builds in whichever schema the run's search_path names (MIGRATION_SCHEMA's tenant too), as the
# migrations it replaces did. Text in a row is left alone: the proof catches a value that is one name.
_QUOTED_NAME = re.compile(r"'public\.([\w\"]+)'")
_PUBLIC = re.compile(r"'(?:[^']|'')*'|\bpublic\.(?=[\"\w])")


@dataclass(frozen=True)
class Dump:
    """What a database holds at a revision: SQLite's statements, and PostgreSQL's dump."""

    sqlite: tuple[str, ...]
    postgresql: str | None  # None: MIGRATION_BACKENDS=sqlite, the project never deploys to PostgreSQL

    @property
    def postgresql_script(self) -> str | None:
        """The dump as the squash runs it: names left to the search_path (quoted text kept as is)."""
        if self.postgresql is None:
            return None
        return _PUBLIC.sub(_unqualified, self.postgresql)


def _unqualified(found: re.Match[str]) -> str:
    """``public.x`` as ``x``; a literal only when it is one name (``nextval('public.x_seq')``), never text."""
    if not found[0].startswith("'"):
        return ""
    name = _QUOTED_NAME.fullmatch(found[0])
    return f"'{name[1]}'" if name else found[0]


def sqlite_statements(connection: Connection) -> tuple[str, ...]:
    """Every table's DDL and rows, then the indexes, triggers and views, as SQLite stored them."""
    raw = connection.connection.driver_connection
    assert raw is not None
    return tuple(
        statement
        for statement in raw.iterdump()
        if not statement.startswith(_NOT_SCHEMA) and not _BOOKKEEPING.match(statement)
    )


@contextmanager
def scratch_server() -> Iterator[URL | None]:
    """A superuser URL of a server nobody uses (TEST_DATABASE_URL's, or a throwaway one).

    None with ``MIGRATION_BACKENDS=sqlite``: the project never deploys to PostgreSQL.
    """
    if settings.sqlite_only():
        yield None
        return
    try:
        with pgserver.server() as admin:
            yield admin
    except pgserver.NoServer as exc:
        raise CommandError(
            f"{exc}; make squash renders and proves the PostgreSQL side on a scratch server: set "
            f"TEST_DATABASE_URL to a PostgreSQL superuser URL (or MIGRATION_BACKENDS=sqlite); {UNWRITTEN}"
        ) from None


def dump_at(script: ScriptDirectory, revision: str, admin: URL | None, built_by: str) -> Dump:
    """Migrate an empty SQLite database and an empty PostgreSQL one to ``revision``; dump both.

    ``built_by`` names what ran, for the one line that says it failed.
    """
    try:
        with scratch.memory_engine().connect() as connection:
            scratch.upgrade(connection, script, revision)
            sqlite = sqlite_statements(connection)
    except Exception as exc:  # a migration that does not run here: said in one line, nothing written
        raise CommandError(
            f"{built_by} fail on an empty SQLite database ({_reason(exc)}); {UNWRITTEN}"
        ) from None
    if admin is None:
        return Dump(sqlite, None)
    with pgserver.fresh_database(admin) as url:
        engine = Target.of(url).engine()
        try:
            with engine.connect() as connection:
                scratch.upgrade(connection, script, revision)
        except Exception as exc:
            raise CommandError(
                f"{built_by} fail on an empty PostgreSQL database ({_reason(exc)}); {UNWRITTEN}"
            ) from None
        finally:
            engine.dispose()
        postgresql = snapshot.pg_dump(url, "--column-inserts")
    return Dump(sqlite, postgresql)


def through_squash(config: Config, name: str, text: str, admin: URL | None) -> Dump:
    """Dump scratch databases built by a squash not yet written (``text``), as a run would load it."""
    with tempfile.TemporaryDirectory() as folder:
        candidate = Path(folder) / name
        candidate.write_text(text, encoding="utf-8")
        squash = squashes.load(candidate)
        script = ScriptDirectory.from_config(config)
        squashes.follow(script, squash)
        return dump_at(script, squash.upto, admin, "the squash's statements")


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    return " ".join(text.split())[:200]


def differences(old: Dump, new: Dump) -> list[str]:
    """How the database built by the squash differs from the one built by the old files, line by line."""
    found = []
    sides = [("SQLite", list(old.sqlite), list(new.sqlite))]
    if old.postgresql is not None and new.postgresql is not None:
        sides.append(("PostgreSQL", old.postgresql.splitlines(), new.postgresql.splitlines()))
    for backend, before, after in sides:
        changed = [
            line
            for line in difflib.unified_diff(before, after, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        if changed:
            shown = "; ".join(" ".join(line.split())[:160] for line in changed[:4])
            found.append(f"{backend}: {shown}")
    return found


def describe(found: Sequence[str]) -> str:
    return " | ".join(found)

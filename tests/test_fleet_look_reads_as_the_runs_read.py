"""A fleet's own look at its targets reaches what their runs reach, and may say less, never more.

The look reads a plain PostgreSQL URL itself, without SQLAlchemy (a fleet at
head would otherwise spend a third of its time importing it), so it must read
it exactly as SQLAlchemy does: the same masked and full URL, and the same
psycopg connection keywords as SQLAlchemy's dialect. Every other URL goes to
SQLAlchemy, and is compared here too. A look at many SQLite files is split
across forked processes; a child that fails must take none of its files with
it as "at head".
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from dbtools import pgserver, target
from dbtools.fleet import current, libpq, servers, split, targets
from dbtools.fleet.errors import FleetError
from dbtools.fleet.targets import Target
from dbtools.runtime import fastpath
from tests.helpers import ROOT, execute, url_string

PLAIN = [
    "postgresql://app@db.example.com:5432/saas",
    "postgres://app@db.example.com/saas",
    "postgresql+psycopg://app.reader@10.0.0.7:06432/tenants-eu",
    "postgresql://db.internal/app_db",
    "postgresql://a_b~c@localhost/x.y",
]
GENERAL = [
    "postgresql://app@db.example.com/saas?sslmode=require&application_name=fleet",
    "postgresql://app@[::1]:5433/saas",
    "postgresql://app%40corp@db/saas",
    "postgresql://app@/saas?host=/var/run/postgresql",
    "postgresql+psycopg://app@db:70000/saas",
    "postgresql:///saas",
]
# Every character a password may hold that a URL spells differently.
PASSWORD = "p@ss:w/rd +%?#&=é"


def _as_a_run_connects(full: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What a run handed ``DATABASE_URL=full`` connects with: the project's own reading, its engine's
    dialect (dbtools.target), not this module's."""
    monkeypatch.setenv("DATABASE_URL", full)
    engine = target.Target.of(target.resolve_url(None, ROOT)).engine()
    try:
        keywords = engine.dialect.create_connect_args(engine.url)[1]
    finally:
        engine.dispose()
    # Where it connects, and as whom: psycopg's type adapters (context) are the dialect's own.
    return {name: value for name, value in keywords.items() if name != "context"}


@pytest.mark.parametrize("raw", PLAIN + GENERAL)
@pytest.mark.parametrize("password", [None, PASSWORD, ""])
def test_a_server_url_reads_as_sqlalchemy_reads_it(
    raw: str, password: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shown as SQLAlchemy shows it, handed to the runs with the password from the env, and
    connected to as those runs connect, with or without a password (an empty one too)."""
    if password is not None:
        monkeypatch.setenv("FLEET_PASSWORD", password)
    server = servers.parse("targets[0]", raw, "FLEET_PASSWORD" if password is not None else None)
    url = make_url(raw).set(drivername="postgresql+psycopg")
    with_password = url if password is None else url.set(password=password)
    assert server.shown == with_password.render_as_string(hide_password=True)
    handed = make_url(server.full)
    assert (handed.drivername, handed.host, handed.port, handed.database, handed.query) == (
        "postgresql+psycopg",
        url.host,
        url.port,
        url.database,
        url.query,
    )
    assert (handed.username, handed.password) == (url.username, password if url.username else None)
    assert dict(server.connect) == _as_a_run_connects(server.full, monkeypatch)
    if password:
        assert password not in server.shown
        assert server.masked(f"FATAL: {password} rejected") == "FATAL: *** rejected"


def test_plain_urls_never_import_sqlalchemy_and_others_are_checked_by_it() -> None:
    """The everyday shape is read without SQLAlchemy (a fleet at head stays light), in a process of
    its own; any other goes to SQLAlchemy, and a mistake is one FleetError either way."""
    program = (
        "import sys\nfrom dbtools.fleet import servers\n"
        f"for raw in {PLAIN!r}:\n    servers.parse('targets[0]', raw, None)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'sqlalchemy', 'alembic'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr
    for raw, said in [
        ("postgresql://app:secret@db/saas", "url holds a password"),
        ("mysql://app@db/saas", "is neither a SQLite file nor PostgreSQL"),
        ("postgresql+psycopg2://app@db/saas", "names the driver 'postgresql\\+psycopg2'"),
        ("postgresql+nosuchdriver://app@db/saas", "names the driver 'postgresql\\+nosuchdriver'"),
        ("not a url", "url is not a valid database URL"),
    ]:
        with pytest.raises(FleetError, match=said) as refused:
            servers.parse("targets[0]", raw, None)
        assert "secret" not in str(refused.value)
    with pytest.raises(FleetError, match="password_env names NOT_SET_ANYWHERE, which is not set"):
        servers.parse("targets[0]", PLAIN[0], "NOT_SET_ANYWHERE")


def _multiples_of_seven(items: Sequence[int]) -> set[int]:
    return {index for index, item in enumerate(items) if item % 7 == 0}


def test_a_look_split_across_processes_finds_what_one_process_finds(tmp_path: Path) -> None:
    """Halves looked at in a forked child and here, put back together by index."""
    items = list(range(1000))
    pids = tmp_path / "pids"

    def look(part: Sequence[int]) -> set[int]:
        with pids.open("a") as out:
            out.write(f"{os.getpid()}\n")
        return _multiples_of_seven(part)

    expected = {index for index in range(1000) if index % 7 == 0}
    assert split.found_across_processes(items, look, bound=1) == expected
    assert pids.read_text().split() == [str(os.getpid())]  # one process: nothing forked
    pids.unlink()
    processes = min(4, split.cores())
    assert split.found_across_processes(items, look, bound=4) == expected
    assert len(set(pids.read_text().split())) == processes
    assert split.found_across_processes(items[:100], _multiples_of_seven, bound=4) == {
        index for index in range(100) if index % 7 == 0
    }


def test_a_child_that_fails_takes_none_of_its_items_as_found() -> None:
    """Raising, or leaving without a word, in the child: its part goes to the runs; the rest stands.

    On one core nothing is forked, and the one process finds them all."""
    parent = os.getpid()
    items = list(range(600))

    def raises(part: Sequence[int]) -> set[int]:
        if os.getpid() != parent:
            raise RuntimeError("the child's look failed")
        return set(range(len(part)))

    def leaves(part: Sequence[int]) -> set[int]:
        if os.getpid() != parent:
            os._exit(0)  # a clean exit, nothing written: not a result
        return set(range(len(part)))

    forked = split.cores() >= 2
    for look in (raises, leaves):
        assert split.found_across_processes(items, look, bound=2) == set(range(300 if forked else 600))


@pytest.mark.parametrize("client", ["libpq", "psycopg"])
def test_a_look_with_a_second_connection_finds_what_one_connection_finds(
    client: str, pg_admin_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look at head splits a database's schemas between two connections from SPLIT_FROM
    schemas on (lowered here, as a fleet of a few hundred schemas would): each schema is still
    judged on its own rows, whichever connection read them. Through libpq by ctypes, and through
    psycopg where no libpq can be loaded."""
    if client == "psycopg":
        monkeypatch.setattr(libpq, "_searched", True)
        monkeypatch.setattr(libpq, "_lib", None)
    assert libpq.available() is (client == "libpq")
    revisions = {"r1": "r1.py", "r2": "r2.py"}
    history = current.History(
        ["r2"], revisions, fastpath.Checkout("fingerprint", {"r1.py": ("s1", "s1"), "r2.py": ("s2", "s2")})
    )
    good = "INSERT INTO {0}.alembic_checksums VALUES ('r1', 's1'), ('r2', 's2')"
    schemas = {
        "tenant_a": good,
        "tenant_b": good,
        "tenant_c": "INSERT INTO {0}.alembic_checksums VALUES ('r1', 's1'), ('r2', 'edited')",
        "tenant_d": good,
        "tenant_e": "INSERT INTO {0}.alembic_checksums VALUES ('r1', 's1')",
        "tenant_f": good,
    }
    with pgserver.fresh_database(pg_admin_url) as url:
        execute(
            url,
            *(
                statement.format(schema)
                for schema, checksums in schemas.items()
                for statement in (
                    "CREATE SCHEMA {0}",
                    "CREATE TABLE {0}.alembic_version (version_num varchar(32) PRIMARY KEY)",
                    "CREATE TABLE {0}.alembic_checksums (revision varchar(32) PRIMARY KEY, checksum text)",
                    "INSERT INTO {0}.alembic_version VALUES ('r2')",
                    checksums,
                )
            ),
        )
        monkeypatch.setenv("LOOK_PASSWORD", str(url.password))
        server = servers.parse("targets[0]", url_string(url._replace(password=None)), "LOOK_PASSWORD")
        targets = [
            Target("all", f"{server.shown}#{name}", server.full, name, server=server) for name in schemas
        ]
        expected = {t for t in targets if t.schema in ("tenant_a", "tenant_b", "tenant_d", "tenant_f")}
        assert current._postgresql_at_head(server, targets, history, parallel=1) == expected
        monkeypatch.setattr(current, "SPLIT_FROM", 2)
        assert current._postgresql_at_head(server, targets, history, parallel=2) == expected
        assert current._postgresql_at_head(server, targets[:1], history, parallel=2) == set(targets[:1])


@pytest.mark.parametrize("client", ["libpq", "psycopg"])
def test_a_refused_connection_or_statement_is_libpqs_own_words_without_the_password(
    client: str, pg_admin_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    if client == "psycopg":
        monkeypatch.setattr(libpq, "_searched", True)
        monkeypatch.setattr(libpq, "_lib", None)
    monkeypatch.setenv("LOOK_PASSWORD", "not-the-password-7f3")
    wrong = servers.parse("targets[0]", url_string(pg_admin_url._replace(password=None)), "LOOK_PASSWORD")
    with pytest.raises(libpq.LibpqError) as refused, servers.connected(wrong):
        pass
    said = servers.reason(wrong, refused.value)
    assert "password authentication failed" in said
    assert "not-the-password-7f3" not in said
    monkeypatch.setenv("LOOK_PASSWORD", str(pg_admin_url.password))
    right = servers.parse("targets[0]", url_string(pg_admin_url._replace(password=None)), "LOOK_PASSWORD")
    with servers.connected(right) as conn:
        with pytest.raises(libpq.LibpqError, match='relation "no_such_table" does not exist'):
            conn.rows("SELECT * FROM no_such_table")
        assert conn.rows("SELECT $1, NULL, 'é'", ["a b"]) == [("a b", None, "é")]  # the same connection
    assert conn.closed
    # An empty setting: libpq's keyword form would ignore it where the runs' string form refuses it.
    empty = dataclasses.replace(right, connect=(*right.connect, ("sslmode", "")))
    with pytest.raises(libpq.LibpqError, match="an empty connection setting"), servers.connected(empty):
        pass


def test_no_server_connection_outlives_a_look_into_its_forks(
    pg_admin_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection that listed a database's schemas is kept for that database's look; a group
    whose look forks for its SQLite files (a canary group of files first, say) closes it first."""
    monkeypatch.setenv("LOOK_PASSWORD", str(pg_admin_url.password))
    server = servers.parse("targets[0]", url_string(pg_admin_url._replace(password=None)), "LOOK_PASSWORD")
    assert "public" in targets._schemas("targets[0]", server)
    assert server in servers._kept  # kept for the look that follows
    current.at_head([], parallel=2)  # a group with no target on that server
    assert servers._kept == {}

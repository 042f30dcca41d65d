"""Breaking changes from `make migration` run as expand, then contract, under two application versions.

For each change (a column rename, a table rename, a dropped column, NOT NULL
on a nullable column), on PostgreSQL, the old version keeps writing the old
shape and the new one the new shape through ``make upgrade phase=expand``;
both see 0 errors and the values agree, and ``make upgrade`` then removes the
old shape, after which ``make check`` is clean. A ``make downgrade`` at
either point keeps every row, and a backfill killed halfway resumes and
finishes. On SQLite the same two files give today's one-step change.
"""

from __future__ import annotations

import ast
import fcntl
import multiprocessing
import os
import pty
import re
import struct
import termios
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.runtime import backfill
from tests.helpers import Project, engine_for, execute, failed_line, insert_users, query

ROWS = 3000  # three backfill batches of 1,000
FORK = multiprocessing.get_context("fork")
DIFFERENT = "SELECT count(*) FROM users WHERE login IS DISTINCT FROM username"
USERNAME = "    username: Mapped[str]"
CREATED = (
    "    # Set by the database, so rows written by any client get the same clock.\n"
    "    created_at: Mapped[datetime] = mapped_column("
    "UTCDateTime(), server_default=func.current_timestamp())\n"
)
REPR = "\n    def __repr__"


def column_count(column: str, more: str = "") -> str:
    return (
        "SELECT count(*) FROM information_schema.columns "
        f"WHERE table_name = 'users' AND column_name = '{column}'{more}"
    )


@dataclass(frozen=True)
class Version:
    """One application version, as the SQL it runs; ``:v`` a value, ``:e`` an email, ``:i`` a row's id.

    ``read`` reads back the row ``insert`` wrote and must find ``:v``; ``ready``
    returns a row once this version can run (the new one rolls out after the
    expand).
    """

    insert: str
    read: str
    update: str
    ready: str = "SELECT 1"


def plain(
    table: str, column: str = "username", extra: tuple[str, str] = ("", ""), ready: str = "SELECT 1"
) -> Version:
    names, values = extra
    return Version(
        insert=f"INSERT INTO {table} ({column}, email{names}) VALUES (:v, :e{values}) RETURNING id",
        read=f"SELECT {column} FROM {table} WHERE id = :i",
        update=f"UPDATE {table} SET {column} = :v WHERE id = :i",
        ready=ready,
    )


@dataclass(frozen=True)
class Breaking:
    """A model edit that breaks the old version, how each version writes, and what proves the window."""

    name: str
    edit: tuple[tuple[str, str], ...]  # models/user.py: text replaced, and by what
    old: Version
    new: Version
    agree: str  # in the window: a count of rows whose old and new shape disagree
    gone: str  # after the contract: a count of what is left of the old shape
    rows: tuple[str, str]  # every row, as the new shape and as the old one shows it
    renames: str = ""
    before: tuple[str, str] | None = None  # an edit migrated first, that this change builds on


CHANGES = [
    Breaking(
        "column_rename",
        ((USERNAME, "    login: Mapped[str]"),),
        old=plain("users"),
        new=plain("users", "login", ready=column_count("login").replace("count(*)", "1")),
        agree=DIFFERENT,
        gone=column_count("username"),
        rows=("SELECT id, login FROM users", "SELECT id, username FROM users"),
        renames="users.username=login",
    ),
    Breaking(
        "table_rename",
        (('__tablename__ = "users"', '__tablename__ = "accounts"'),),
        old=plain("users"),
        new=Version(
            **{**vars(plain("accounts")), "ready": "SELECT 1 WHERE to_regclass('accounts') IS NOT NULL"}
        ),
        agree="SELECT (SELECT count(*) FROM users) - (SELECT count(*) FROM accounts)",
        gone="SELECT count(*) FROM pg_class WHERE relname = 'users'",
        rows=("SELECT id, username FROM accounts", "SELECT id, username FROM users"),
        renames="users=accounts",
    ),
    Breaking(
        "column_drop",
        ((CREATED, ""),),
        old=plain("users", extra=(", created_at", ", now()")),
        new=plain("users"),
        agree="SELECT count(*) FROM users WHERE created_at IS NULL",
        gone=column_count("created_at"),
        rows=("SELECT id, username FROM users", "SELECT id, username FROM users"),
    ),
    Breaking(
        "not_null",
        (
            (
                "time_zone: Mapped[str | None] = mapped_column(String(64))",
                'time_zone: Mapped[str] = mapped_column(String(64), server_default="UTC")',
            ),
        ),
        # The old version writes NULL, which the trigger fills: it reads back its name, not the NULL.
        old=Version(
            insert="INSERT INTO users (username, email, time_zone) VALUES (:v, :e, NULL) RETURNING id",
            read="SELECT username FROM users WHERE id = :i",
            update="UPDATE users SET time_zone = NULL, username = :v WHERE id = :i",
        ),
        new=plain("users", extra=(", time_zone", ", 'Europe/Paris'")),
        agree="SELECT count(*) FROM users WHERE time_zone IS NULL",
        gone="SELECT (" + column_count("time_zone", " AND is_nullable = 'YES'") + ") "
        "+ (SELECT count(*) FROM pg_trigger WHERE tgname = 'users_time_zone_fill')",
        rows=("SELECT id, username, time_zone FROM users", "SELECT id, username, time_zone FROM users"),
        before=(REPR, "\n    time_zone: Mapped[str | None] = mapped_column(String(64))\n" + REPR),
    ),
    Breaking(
        "type_change",
        (
            (
                'score: Mapped[int] = mapped_column(server_default="0")',
                'score: Mapped[int] = mapped_column(BigInteger, server_default="0")',
            ),
            ("from sqlalchemy import String", "from sqlalchemy import BigInteger, String"),
        ),
        # Both versions write the column by its name; a shadow bigint follows it until the contract.
        old=plain("users", extra=(", score", ", 7")),
        new=plain("users", extra=(", score", ", 8")),
        agree="SELECT count(*) FROM users WHERE _new_score IS DISTINCT FROM score",
        gone="SELECT ("
        + column_count("_new_score")
        + ") + ("
        + column_count("score", " AND data_type <> 'bigint'")
        + ")",
        rows=("SELECT id, username, score FROM users", "SELECT id, username, score FROM users"),
        before=(REPR, '\n    score: Mapped[int] = mapped_column(server_default="0")\n' + REPR),
    ),
]


@dataclass
class Generated:
    project: Project
    sqlite: URL
    base: str  # the revision before the change
    expand: Path
    contract: Path
    change: Breaking = field(default_factory=lambda: CHANGES[0])


def generate(project: Project, sqlite: URL, change: Breaking) -> Generated:
    """``make migration`` after the model edit (after ``change.before``, migrated first)."""
    project.migrate(sqlite)
    user = project.root / "models" / "user.py"
    if change.before is not None:
        user.write_text(user.read_text().replace(*change.before, 1))
        assert project.cli("migration", "--message=before", "--renames=", url=sqlite).returncode == 0
        project.migrate(sqlite)
    (base,) = project.heads()
    text = user.read_text()
    for old, new in change.edit:
        assert old in text
        text = text.replace(old, new, 1)
    user.write_text(text.replace("username={self.username!r}", "id={self.id!r}"))
    made = project.cli("migration", f"--message={change.name}", f"--renames={change.renames}", url=sqlite)
    assert made.returncode == 0, made.stderr
    (expand,) = project.versions.glob(f"*_{change.name}.py")
    (contract,) = project.versions.glob(f"*_{change.name}_contract.py")
    return Generated(project, sqlite, base, expand, contract, change)


@pytest.fixture(params=CHANGES, ids=[change.name for change in CHANGES])
def generated(request: pytest.FixtureRequest, project_copy: Project, tmp_path: Path) -> Generated:
    sqlite = URL.create("sqlite", database=str(tmp_path / "project" / "app.db"))
    return generate(project_copy, sqlite, request.param)


@pytest.fixture
def renamed(project_copy: Project, tmp_path: Path) -> Generated:
    """The column rename alone: the backfill and SQLite cases need one change."""
    return generate(
        project_copy, URL.create("sqlite", database=str(tmp_path / "project" / "app.db")), CHANGES[0]
    )


@pytest.fixture
def postgresql(pg_admin_url: URL, request: pytest.FixtureRequest) -> Iterator[URL]:
    """A database at the revision before the change, holding ``ROWS`` users."""
    generated: Generated = request.getfixturevalue(
        "renamed" if "renamed" in request.fixturenames else "generated"
    )
    with pgserver.fresh_database(pg_admin_url) as url:
        generated.project.migrate(url, generated.base)
        insert_users(url, ROWS)
        yield url


def write(url: URL, version: Version, name: str, stop: Any, results: Any) -> None:
    """An application version: insert a row, read it back, update another, until ``stop``.

    Errors, and values read back other than written, are counted: what the
    application would see.
    """
    engine = engine_for(url, isolation_level="AUTOCOMMIT")
    writes = errors = n = 0
    first = ""
    try:
        with engine.connect() as conn:
            while not stop.is_set():
                if not conn.execute(sa.text(version.ready)).first():
                    time.sleep(0.005)
                    continue
                n += 1
                value = f"{name}-{n}"
                try:
                    inserted = conn.execute(
                        sa.text(version.insert), {"v": value, "e": f"{value}@example.com"}
                    ).scalar_one()
                    read = conn.execute(sa.text(version.read), {"i": inserted}).scalar_one()
                    conn.execute(sa.text(version.update), {"v": f"{value}-again", "i": 1 + n * 7 % ROWS})
                    if read != value:
                        raise AssertionError(f"read back {read!r}, not {value!r}")
                    writes += 1
                except Exception as exc:
                    errors += 1
                    first = first or str(exc).splitlines()[0]
    finally:
        engine.dispose()
        results.put((name, writes, errors, first))


class Writers:
    """The old and the new application version, each in a process of its own, writing until stopped."""

    def __init__(self, url: URL, change: Breaking) -> None:
        self.results: Any = FORK.Queue()
        versions = {"old": change.old, "new": change.new}
        self.stops = {name: FORK.Event() for name in versions}
        self.processes = {
            name: FORK.Process(target=write, args=(url, version, name, self.stops[name], self.results))
            for name, version in versions.items()
        }
        for process in self.processes.values():
            process.start()

    def stop(self, name: str) -> int:
        """Stop one version; how many times it wrote, after checking it saw no error."""
        self.stops[name].set()
        self.processes[name].join(30)
        found, writes, errors, first = self.results.get(timeout=30)
        assert found == name
        assert (errors, first) == (0, ""), f"the {name} version saw {errors} error(s)"
        assert writes > 0
        return int(writes)


@pytest.mark.slow(seconds=2)
def test_both_versions_write_through_expand_then_contract_and_downgrades_keep_rows(
    generated: Generated, postgresql: URL
) -> None:
    project, url, change = generated.project, postgresql, generated.change
    assert 'phase = "expand"' in generated.expand.read_text()
    assert 'phase = "contract"' in generated.contract.read_text()
    writers = Writers(url, change)
    time.sleep(0.1)  # the old version writes before the expand starts
    expanded = project.cli("upgrade", "--phase=expand", url=url)
    assert expanded.returncode == 0, expanded.stderr
    if "DO $$" in generated.expand.read_text():  # not a terminal: plain lines, the last one always
        assert re.search(r"^Backfill \w+: [\d,]+ rows in [\d.]+ s, [\d,]+ rows/s$", expanded.stderr, re.M)
    time.sleep(0.2)  # both versions write in the window
    assert query(url, change.agree) == [(0,)]
    old_writes = writers.stop("old")  # the last old instance goes
    status = project.cli("status", url=url).stdout
    assert "Between expand and contract" in status
    assert "pending, contract" in status

    contracted = project.cli("upgrade", url=url)
    assert contracted.returncode == 0, contracted.stderr
    time.sleep(0.05)
    new_writes = writers.stop("new")
    assert query(url, change.gone) == [(0,)]
    assert project.cli("check", url=url).returncode == 0
    rows = sorted(query(url, change.rows[0]))
    assert len(rows) == ROWS + old_writes + new_writes

    # Back into the window (the old shape grown again), then before the change: every row kept.
    assert project.cli("downgrade", url=url).returncode == 0
    assert sorted(query(url, change.rows[1])) == rows
    assert query(url, change.agree) == [(0,)]
    assert project.cli("downgrade", url=url).returncode == 0
    assert sorted(query(url, change.rows[1])) == rows

    # The expand again, the new version writing in the window, and straight back with no contract
    # applied: the old shape holds what the new version wrote, and the old version reads it.
    assert project.cli("upgrade", "--phase=expand", url=url).returncode == 0
    written = new_version_writes(url, change.new)
    window = sorted(query(url, change.rows[0]))
    assert project.cli("downgrade", url=url).returncode == 0
    assert sorted(query(url, change.rows[1])) == window
    assert read_as(url, change.old, written) == "after-the-expand"


def new_version_writes(url: URL, version: Version) -> int:
    """One row inserted by ``version`` (its id), read back as written."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            value = {"v": "after-the-expand", "e": "after-the-expand@example.com"}
            written = int(conn.execute(sa.text(version.insert), value).scalar_one())
            assert conn.execute(sa.text(version.read), {"i": written}).scalar_one() == value["v"]
    finally:
        engine.dispose()
    return written


def read_as(url: URL, version: Version, row: int) -> object:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(version.read), {"i": row}).scalar_one()
    finally:
        engine.dispose()


def test_a_killed_backfill_resumes_and_fills_every_row(renamed: Generated, postgresql: URL) -> None:
    """Killed between its first and second batch (a pause between batches makes room), then run again."""
    project, url = renamed.project, postgresql
    paused = {"MIGRATION_BACKFILL_PAUSE": "0.5"}
    run = FORK.Process(target=lambda: project.cli("upgrade", "--phase=expand", url=url, env=paused))
    run.start()
    backfill = "SELECT pid FROM pg_stat_activity WHERE starts_with(query, 'DO $$') AND wait_event = 'PgSleep'"
    deadline = time.monotonic() + 10
    while not (pids := query(url, backfill)):
        assert time.monotonic() < deadline, "the backfill never paused after its first batch"
        time.sleep(0.01)
    execute(url, f"SELECT pg_terminate_backend({pids[0][0]})")
    run.join(30)
    assert query(url, "SELECT count(login) FROM users") == [(1000,)]  # the first batch only
    status = project.cli("status", url=url).stdout
    assert "half-applied" in status
    resumed = project.cli("upgrade", "--phase=expand", url=url)
    assert resumed.returncode == 0, resumed.stderr
    assert query(url, "SELECT count(login) FROM users") == [(ROWS,)]
    assert query(url, DIFFERENT) == [(0,)]

    # Run a third time, by hand (as `make sql` prints it), on a terminal: it walks every row, fills
    # none twice, and rich draws its progress after each batch.
    shown = drawn_on_a_terminal(url, renamed.expand)
    assert "backfill users" in shown
    assert "1000/3000" in shown
    assert "3000/3000" in shown
    assert "rows/s" in shown
    assert "Backfill users:" not in shown  # the bar, not the plain lines
    assert query(url, DIFFERENT) == [(0,)]


def test_sqlite_gets_the_one_step_rename_and_phase_is_checked(renamed: Generated) -> None:
    project, sqlite = renamed.project, renamed.sqlite
    insert_users(sqlite, 3)
    refused = project.cli("upgrade", "--phase=contract", url=sqlite)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("FAILED: phase='contract'")
    assert project.cli("upgrade", "--phase=expand", url=sqlite).returncode == 0
    # The expand revision made the whole change: the contract leaves the table as it is.
    table = "SELECT sql FROM sqlite_master WHERE tbl_name = 'users' ORDER BY name"
    expanded = query(sqlite, table)
    assert "login" in str(expanded)
    assert "username" not in str(expanded)
    assert query(sqlite, "SELECT login FROM users ORDER BY id") == [(f"user{i}",) for i in range(3)]
    # In the window, make check never tells the user to run the contract while old instances may run.
    window = failed_line(project.cli("check", url=sqlite))
    assert "between expand and contract" in window
    assert "once the last instance of the old application version is gone" in window
    assert project.cli("upgrade", url=sqlite).returncode == 0
    assert query(sqlite, table) == expanded
    assert project.cli("check", url=sqlite).returncode == 0


def drawn_on_a_terminal(url: URL, expand: Path) -> str:
    """The expand revision's DO block run again, its notices drawn by rich on a real pseudo-terminal."""
    (block,) = (
        node.args[0].value
        for node in ast.walk(ast.parse(expand.read_text()))
        if isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).startswith("DO $$")
    )
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # rows, columns
    engine = engine_for(url, isolation_level="AUTOCOMMIT")
    try:
        with (
            open(terminal, "w", closefd=False) as stream,
            engine.connect() as conn,
            backfill.shown(conn.connection.dbapi_connection, stream),
        ):
            conn.execute(sa.text(str(block)))
        os.close(terminal)
        chunks = []
        with suppress(OSError):  # EIO: nothing holds the terminal any more
            while chunk := os.read(controller, 65536):
                chunks.append(chunk)
    finally:
        engine.dispose()
        os.close(controller)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())


def test_a_table_without_a_single_column_key_gets_the_one_step_change_and_one_line_why(
    project_copy: Project, tmp_path: Path
) -> None:
    """The backfill walks a single-column primary key: a composite one gets no split, and says so."""
    sqlite = URL.create("sqlite", database=str(tmp_path / "project" / "app.db"))
    project = project_copy
    project.migrate(sqlite)
    user = project.root / "models" / "user.py"
    user.write_text(user.read_text() + MEMBERSHIPS)
    assert project.cli("migration", "--message=memberships", "--renames=", url=sqlite).returncode == 0
    project.migrate(sqlite)
    user.write_text(user.read_text().replace(*ROLE_NOT_NULL))
    made = project.cli("migration", "--message=role", "--renames=", url=sqlite)
    assert made.returncode == 0, made.stderr
    said = [line for line in made.stdout.splitlines() if "expand/contract" in line]
    assert said == [
        "Written in one step, not expand/contract: memberships has a primary key of 2 columns "
        "(user_id, team), and the backfill walks a single-column primary key in batches (give the "
        "table one, e.g. an identity column, to have the change split)"
    ]
    (written,) = project.versions.glob("*_role.py")
    assert "phase = " not in written.read_text()
    assert not list(project.versions.glob("*_contract.py"))


MEMBERSHIPS = """

class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(primary_key=True)
    team: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str | None] = mapped_column(String(16))
"""
ROLE_NOT_NULL = (
    "role: Mapped[str | None] = mapped_column(String(16))",
    'role: Mapped[str] = mapped_column(String(16), server_default="member")',
)

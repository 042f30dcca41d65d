"""``make upgrade fleet=<file>``: every database of a fleet, canary first, with a report.

Each target's run is the single-target ``upgrade`` itself, forked by the fleet
command (itself forked from the test process: ``project.cli``), so the cost is
the few real runs. A corrupt file fails with its reason while the others
succeed under ``continue``; ``stop`` stops its group and every later one; a
re-run touches only what is not at head; a bad fleet file runs nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import sqlite3
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.fleet import libpq, runner
from dbtools.fleet.report import Outcome, Result
from dbtools.fleet.targets import Target
from dbtools.runtime.lockkeys import lock_key
from tests.helpers import (
    VENV,
    Project,
    as_from_a_terminal,
    base_env,
    engine_for,
    execute,
    failed_line,
    query,
    url_string,
)

CORRUPT = b"this is not a database, and no migration may touch it\n"


def _fleet(folder: Path, text: str) -> Path:
    (folder / "tenants").mkdir(exist_ok=True)
    fleet = folder / "fleet.toml"
    fleet.write_text(text)
    return fleet


def _run(project: Project, fleet: Path, report: Path, **env: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    result = project.cli("upgrade", f"--fleet={fleet}", f"--report={report}", env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert report.exists(), result.stderr
    rows = json.loads(report.read_text())["targets"]
    return result, {row["target"]: row for row in rows}


def _revision(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


@pytest.fixture
def pg_url(pg_admin_url: URL) -> Iterator[URL]:
    with pgserver.fresh_database(pg_admin_url) as url:
        yield url


def _pg_entry(url: URL, password_env: str, schemas: str = "") -> str:
    """A fleet file's table for a PostgreSQL target: its URL without the password, which the env holds.

    ``schemas`` is the TOML of its value, as written in the file.
    """
    bare = url_string(url._replace(password=None))
    return f'{{ url = "{bare}", password_env = "{password_env}"' + (
        f", schemas = {schemas} }}" if schemas else " }"
    )


def _imports_of_a_fleet(
    project: Project, fleet: Path, env: dict[str, str], *options: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``make upgrade fleet=`` as make runs it, a new process, and every module its own process
    imported (each run's imports go to its log). It must succeed."""
    done = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-X",
            "importtime",
            "-m",
            "dbtools",
            "upgrade",
            f"--fleet={fleet}",
            *options,
        ],
        cwd=project.root,
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    return done, [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]


TENANTS = [f"tenant_{n:02d}" for n in range(10)]


@pytest.mark.slow(seconds=5)
def test_a_fleet_of_20_files_10_schemas_and_a_database_upgrades_reports_and_reruns_only_the_failed(
    project_copy: Project, pg_url: URL, pg_admin_url: URL, tmp_path: Path
) -> None:
    """The issue's fleet: a canary file, then 19 more files (one corrupt), 10 tenant schemas of one
    database (one holding a conflicting table) and a second database, under on_error = "continue"."""
    head = project_copy.recorded_head()
    tenants = tmp_path / "tenants"
    with pgserver.fresh_database(pg_admin_url) as second:
        saas_entry = _pg_entry(pg_url, "SAAS_PASSWORD", '"tenant_*"')
        fleet = _fleet(
            tmp_path,
            '[[group]]\nname = "canary"\nparallel = 1\ntargets = ["sqlite:///tenants/t00.db"]\n\n'
            '[[group]]\nname = "rest"\nparallel = 4\non_error = "continue"\ntargets = [\n'
            '  "sqlite:///tenants/*.db",\n'
            f"  {saas_entry},\n"
            f"  {_pg_entry(second, 'EU_PASSWORD')},\n]\n",
        )
        for number in range(19):
            (tenants / f"t{number:02d}.db").touch()  # new, empty databases: the glob finds them
        (tenants / "bad.db").write_bytes(CORRUPT)
        execute(
            pg_url,
            *(f"CREATE SCHEMA {name}" for name in [*TENANTS, "other"]),
            "CREATE TABLE tenant_09.users (id int)",  # conflicts with the migration
        )
        env = {"SAAS_PASSWORD": str(pg_url.password), "EU_PASSWORD": str(second.password)}
        report = tmp_path / "report.json"
        saas, eu = (u.render_as_string(hide_password=True) for u in (pg_url, second))

        result, rows = _run(project_copy, fleet, report, **env)
        assert "2 of 31 targets failed, 0 not started" in failed_line(result)
        for secret in env.values():
            assert secret not in result.stdout + result.stderr + report.read_text()
        files = [f"sqlite:///tenants/t{n:02d}.db" for n in range(19)]
        schemas = [f"{saas}#{name}" for name in TENANTS]
        assert list(rows) == [files[0], "sqlite:///tenants/bad.db", *files[1:], *schemas, eu]
        for row in rows.values():
            assert set(row) == {"target", "group", "from", "to", "seconds", "result", "reason"}
            assert isinstance(row["seconds"], float)
        assert rows[files[0]]["group"] == "canary"  # named first; the glob skips it
        bad = rows.pop("sqlite:///tenants/bad.db")
        assert (bad["group"], bad["result"], bad["from"], bad["to"]) == ("rest", "failed", None, None)
        assert "is not a SQLite database" in bad["reason"]
        assert (tenants / "bad.db").read_bytes() == CORRUPT
        conflict = rows.pop(f"{saas}#tenant_09")
        assert (conflict["result"], conflict["from"], conflict["to"]) == ("failed", None, None)
        assert "users" in conflict["reason"]
        for target, row in rows.items():
            assert (row["from"], row["to"], row["result"], row["reason"]) == (None, head, "upgraded", ""), (
                target
            )
        assert "is not a SQLite database" in result.stdout  # the table
        assert {_revision(tenants / f"t{n:02d}.db") for n in range(19)} == {head}
        assert _versions(pg_url, TENANTS) == {**dict.fromkeys(TENANTS[:9], head), "tenant_09": None}
        assert query(pg_url, "SELECT to_regclass('public.alembic_version'), to_regclass('other.users')") == [
            (None, None)  # each tenant's alembic_version is its own; "other" never matched
        ]
        assert query(second, "SELECT version_num FROM public.alembic_version") == [(head,)]

        # The re-run touches only the failed two: the others are answered at head without a run.
        (tenants / "bad.db").unlink()
        (tenants / "bad.db").touch()
        execute(pg_url, "DROP TABLE tenant_09.users")
        times = {path.name: path.stat().st_mtime_ns for path in tenants.glob("t*.db")}
        result, rows = _run(project_copy, fleet, report, **env)
        assert result.returncode == 0, result.stderr
        for target in ("sqlite:///tenants/bad.db", f"{saas}#tenant_09"):
            assert (rows.pop(target)["result"], _revision_of(target, tenants, pg_url)) == ("upgraded", head)
        assert {(row["from"], row["to"], row["result"]) for row in rows.values()} == {(head, head, "current")}
        assert {row["reason"] for row in rows.values() if row["target"].startswith("sqlite")} == {
            "at head: the no-op fast path answered, no run"
        }
        assert {row["reason"] for row in rows.values() if not row["target"].startswith("sqlite")} == {
            "at head: one look at the database answered, no run"
        }
        assert times == {path.name: path.stat().st_mtime_ns for path in tenants.glob("t*.db")}

        # Every target at head matches the models: make check over the same fleet is clean.
        result = project_copy.cli("check", f"--fleet={fleet}", f"--report={report}", env=env)
        assert result.returncode == 0, result.stderr
        rows = {row["target"]: row for row in json.loads(report.read_text())["targets"]}
        assert len(rows) == 31
        assert {(row["result"], row["reason"]) for row in rows.values()} == {
            ("ok", "No new upgrade operations detected.")
        }


def test_a_target_is_answered_at_head_only_on_the_runs_own_terms(
    project_copy: Project, pg_url: URL, tmp_path: Path
) -> None:
    """The fleet's look never says "at head" where the run would wait or refuse: a tenant whose
    migration lock is held goes to its run, which queues; an edited migration goes to each run,
    which refuses it. Where it does say so, it imported neither SQLAlchemy nor Alembic."""
    entry = _pg_entry(pg_url, "SAAS_PASSWORD", '["tenant_a", "tenant_b"]')
    fleet = _fleet(
        tmp_path,
        f'[[group]]\nname = "all"\nparallel = 2\non_error = "continue"\ntargets = [{entry}]\n',
    )
    env = {"SAAS_PASSWORD": str(pg_url.password), "MIGRATION_LOCK_TIMEOUT": "0.2"}
    report = tmp_path / "report.json"

    done, imported = _imports_of_a_fleet(project_copy, fleet, env)  # named outright: both schemas created
    assert done.stdout.count("upgraded") == 2, done.stdout
    # psycopg once, in the fleet's own process, before the runs are forked, never in each of them
    # (importlib.import_module's own module has no line of its own; what it imports does).
    assert "psycopg.pq" in imported
    # At head, as make runs it: answered by the look, with libpq alone (no SQLAlchemy, no Alembic).
    done, imported = _imports_of_a_fleet(project_copy, fleet, env)
    assert "dbtools.fleet.libpq" in imported
    # libpq itself, through ctypes; psycopg only where no libpq could be loaded.
    heavy = ("sqlalchemy", "alembic", "models") + (("psycopg",) if libpq.available() else ())
    assert not [name for name in imported if name.split(".")[0] in heavy]
    assert done.stdout.count("at head: one look at the database answered, no run") == 2, done.stdout
    engine = engine_for(pg_url)
    elsewhere = engine_for(pg_url.set(database="postgres"))  # another database: its locks are its own
    try:
        with engine.connect() as conn, elsewhere.connect() as other:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({lock_key('tenant_a')})")  # a run on tenant a
            other.exec_driver_sql(f"SELECT pg_advisory_lock({lock_key('tenant_b')})")  # not on this tenant b
            result, rows = _run(project_copy, fleet, report, **env)
            conn.rollback()
    finally:
        engine.dispose()
        elsewhere.dispose()
    a, b = rows.values()
    assert (a["result"], b["result"]) == ("failed", "current")
    assert "another migration run held the migration lock" in a["reason"]
    assert b["reason"] == "at head: one look at the database answered, no run"

    (script,) = project_copy.versions.glob("*.py")
    script.write_text(script.read_text() + "\n# edited after it was applied\n")
    result, rows = _run(project_copy, fleet, report, **env)
    assert "2 of 2 targets failed" in failed_line(result)
    for row in rows.values():
        assert "was edited after it was applied (checksum differs)" in row["reason"], row


FAST_PATH = "at head: the no-op fast path answered, no run"


def test_a_fleet_at_head_imports_no_sqlalchemy_and_leaves_every_change_to_the_runs(
    project_copy: Project, tmp_path: Path
) -> None:
    """SQLite files at head are answered in a process that never imports SQLAlchemy, Alembic or rich,
    as the single no-op is; a file changed, a write lock held, a setting changed and a migration
    edited behind the fingerprint's back (same size, same time) each go to the runs, which decide."""
    head = project_copy.recorded_head()
    fleet = _fleet(
        tmp_path, '[[group]]\nname = "all"\non_error = "continue"\ntargets = ["sqlite:///tenants/*.db"]\n'
    )
    tenants = tmp_path / "tenants"
    # Names a URL reads differently (a query, a percent-escape, a fragment, bytes that are not
    # UTF-8): each run gets its own file.
    names = ("a?x.db", "b%41.db", os.fsdecode(b"c#\xff.db"))
    # As the table and the report show them: the byte that is not UTF-8 escaped.
    targets = ["sqlite:///tenants/a?x.db", "sqlite:///tenants/b%41.db", "sqlite:///tenants/c#\\xff.db"]
    for name in names:
        (tenants / name).touch()
    env = {"MIGRATION_LOCK_TIMEOUT": "0.2"}  # the fast path's records are keyed on it: a held lock fails fast
    report = tmp_path / "report.json"
    result, rows = _run(project_copy, fleet, report, **env)
    assert [row["result"] for row in rows.values()] == ["upgraded"] * 3, result.stderr
    assert sorted(path.name for path in tenants.iterdir()) == sorted(names)
    assert {_revision(tenants / name) for name in names} == {head}

    _, imported = _imports_of_a_fleet(project_copy, fleet, env, f"--report={report}")  # as make runs it
    assert "dbtools.fleet.current" in imported
    heavy = ("sqlalchemy", "alembic", "models", "rich")
    assert not [name for name in imported if name.split(".")[0] in heavy]
    rows = {row["target"]: row for row in json.loads(report.read_text())["targets"]}
    assert list(rows) == targets
    assert {(row["from"], row["to"], row["result"], row["reason"]) for row in rows.values()} == {
        (head, head, "current", FAST_PATH)
    }

    # A file changed (a new, empty one in its place) and another's write lock held: both go to their
    # runs (the new one is upgraded, the locked one waits its 0.2 s and fails); the third is answered.
    (tenants / names[0]).unlink()
    (tenants / names[0]).touch()
    with closing(sqlite3.connect(tenants / names[1], isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        result, rows = _run(project_copy, fleet, report, **env)
    a, b, c = rows.values()
    assert (a["from"], a["to"], a["result"]) == (None, head, "upgraded")
    assert (b["result"], b["from"]) == ("failed", head)
    assert "locked" in b["reason"], b
    assert (c["result"], c["reason"]) == ("current", FAST_PATH)

    # A setting changed: no record is keyed on it, so each file's own run says it is current.
    result, rows = _run(project_copy, fleet, report, **env, MIGRATION_BACKUP_KEEP="2")
    assert result.returncode == 0, result.stderr
    assert {(row["from"], row["result"], row["reason"]) for row in rows.values()} == {(head, "current", "")}

    # A migration edited keeping its size and time (the fingerprint sees nothing): the checksums,
    # read once for the fleet, do, and each run refuses the edit.
    (script,) = project_copy.versions.glob("*.py")
    info = script.stat()
    script.write_text(script.read_text().replace("create users table", "create users TABLE", 1))
    os.utime(script, ns=(info.st_atime_ns, info.st_mtime_ns))
    result, rows = _run(project_copy, fleet, report, **env)
    assert "3 of 3 targets failed" in failed_line(result)
    for row in rows.values():
        assert "was edited after it was applied (checksum differs)" in row["reason"], row


def _versions(url: URL, schemas: list[str]) -> dict[str, object]:
    """Each schema's revision (None without an alembic_version), in one query."""
    union = " UNION ALL ".join(
        f"SELECT '{name}', (SELECT version_num FROM {name}.alembic_version)"
        if query(url, f"SELECT to_regclass('{name}.alembic_version')") != [(None,)]
        else f"SELECT '{name}', NULL"
        for name in schemas
    )
    return dict(query(url, union))  # type: ignore[arg-type]


def _revision_of(target: str, tenants: Path, pg_url: URL) -> object:
    if target.startswith("sqlite:///tenants/"):
        return _revision(tenants / target.removeprefix("sqlite:///tenants/"))
    return _versions(pg_url, [target.rpartition("#")[2]])[target.rpartition("#")[2]]


def test_stop_ends_the_group_and_every_later_one(project_copy: Project, pg_url: URL, tmp_path: Path) -> None:
    """A tenant schema failing in the canary group: nothing more starts there, nor in the next group."""
    canary = _pg_entry(pg_url, "SAAS_PASSWORD", '"tenant_bad"')
    later = _pg_entry(pg_url, "SAAS_PASSWORD", '"tenant_later"')
    fleet = _fleet(
        tmp_path,
        '[[group]]\nname = "canary"\nparallel = 1\non_error = "stop"\n'
        f'targets = ["sqlite:///tenants/a.db", {canary}, "sqlite:///tenants/c.db"]\n\n'
        f'[[group]]\nname = "rest"\ntargets = ["sqlite:///tenants/d.db", {later}]\n',
    )
    execute(pg_url, "CREATE SCHEMA tenant_bad", "CREATE TABLE tenant_bad.users (id int)")
    report = tmp_path / "report.json"
    result, rows = _run(project_copy, fleet, report, SAAS_PASSWORD=str(pg_url.password))
    assert "1 of 5 targets failed, 3 not started" in failed_line(result)
    shown = pg_url.render_as_string(hide_password=True)
    assert [(row["group"], row["result"]) for row in rows.values()] == [
        ("canary", "upgraded"),
        ("canary", "failed"),
        ("canary", "not started"),
        ("rest", "not started"),
        ("rest", "not started"),
    ]
    for target in ("sqlite:///tenants/c.db", "sqlite:///tenants/d.db", f"{shown}#tenant_later"):
        assert rows[target]["reason"] == (
            f"not started: {shown}#tenant_bad failed in group 'canary' (on_error = \"stop\")"
        )
        assert (rows[target]["from"], rows[target]["to"], rows[target]["seconds"]) == (None, None, None)
    assert not (tmp_path / "tenants" / "c.db").exists()
    assert not (tmp_path / "tenants" / "d.db").exists()
    assert query(
        pg_url, "SELECT to_regnamespace('tenant_later'), to_regclass('tenant_bad.alembic_version')"
    ) == [
        (None, None)  # never created; the failed canary rolled back whole
    ]


GROUP = '[[group]]\nname = "g"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GROUP + 'targets = [{ url = "postgresql://app:s3cr3t@127.0.0.1/db" }]\n', "url holds a password"),
        (GROUP + 'targets = ["postgresql://app:s3cr3t@127.0.0.1/db"]\n', "url holds a password"),
        (
            GROUP
            + 'targets = [{ url = "postgresql://app@127.0.0.1/db", password_env = "NO_SUCH_VAR_27" }]\n',
            "password_env names NO_SUCH_VAR_27, which is not set",
        ),
        (GROUP + 'on_error = "ignore"\ntargets = ["sqlite:///tenants/x.db"]\n', "on_error = 'ignore'"),
        (GROUP + 'parallel = 0\ntargets = ["sqlite:///tenants/x.db"]\n', "parallel = 0"),
        (GROUP + 'targets = ["sqlite:///tenants/x.db"]\nretries = 3\n', "unknown key 'retries'"),
        (GROUP + 'targets = ["sqlite:///nowhere/*.db"]\n', "matches no file"),
        (
            GROUP + 'targets = [{ url = "postgresql://app@h/db", schemas = "tenant-*" }]\n',
            "schemas 'tenant-*' is not a schema name",
        ),
        (
            '[[group]]\nname = g\ntargets = ["sqlite:///tenants/x.db"]\n',
            "is not valid TOML: Invalid value (at line 6",
        ),
        ('[[group]]\ntargets = ["sqlite:///tenants/x.db"]\n', "group 2: name is missing"),
    ],
)
def test_a_fleet_file_is_checked_before_anything_runs(
    project: Project, tmp_path: Path, text: str, expected: str
) -> None:
    # A valid first group: a mistake anywhere in the file means it does not run either.
    fleet = _fleet(tmp_path, '[[group]]\nname = "first"\ntargets = ["sqlite:///tenants/first.db"]\n\n' + text)
    result = project.cli("upgrade", f"--fleet={fleet}", f"--report={tmp_path / 'report.json'}")
    line = failed_line(result)
    assert expected in line
    assert "group 2" in line or "(at line 6" in line
    assert "s3cr3t" not in result.stdout + result.stderr
    assert not (tmp_path / "tenants" / "first.db").exists()
    assert not (tmp_path / "report.json").exists()


def test_report_without_a_fleet_is_refused(project: Project, tmp_path: Path) -> None:
    result = project.cli("upgrade", f"--report={tmp_path / 'r.json'}", url=URL.create("sqlite", database="x"))
    assert "report= goes with fleet=" in failed_line(result)


def test_a_status_row_between_expand_and_contract_gives_the_summary_line(tmp_path: Path) -> None:
    """make status's window line after its summary says " applied, " too; the row's reason is the summary."""
    summary = "2 applied, 1 pending; current: 385159a2b2fd; checksums: all match; models: in sync."
    log = tmp_path / "log"
    log.write_text(
        "INFO  [alembic.runtime.migration] Context impl SQLiteImpl.\n"
        "[ ] 4c5f9eba41e1  handle, contract  pending, contract\n"
        f"{summary}\n"
        "Between expand and contract: 385159a2b2fd (handle) is applied, its contract is not; ...\n"
    )
    (tmp_path / "facts").write_text(json.dumps({"from": "385159a2b2fd", "to": "385159a2b2fd"}))
    job = runner._Running(
        Outcome(Target("all", "sqlite:///a.db", "sqlite:///a.db")), 0.0, log, tmp_path / "facts"
    )
    outcome = runner._finish(runner.Kind.STATUS, job, 0, "4c5f9eba41e1")
    assert (outcome.result, outcome.reason) == (Result.PENDING, summary)


def test_status_check_and_verify_of_a_fleet_look_and_stop_at_nothing(
    project: Project, tmp_path: Path
) -> None:
    head = project.recorded_head()
    fleet = _fleet(
        tmp_path,
        '[[group]]\nname = "canary"\ntargets = ["sqlite:///tenants/bad.db"]\n\n'
        '[[group]]\nname = "rest"\ntargets = ["sqlite:///tenants/new.db", "sqlite:///tenants/done.db"]\n',
    )
    tenants = tmp_path / "tenants"
    (tenants / "bad.db").write_bytes(CORRUPT)
    (tenants / "new.db").touch()
    project.migrate(URL.create("sqlite", database=str(tenants / "done.db")))
    report = tmp_path / "status.json"
    result = project.cli("status", f"--fleet={fleet}", f"--report={report}")
    assert "1 of 3 targets failed, 0 not looked at" in failed_line(result)  # on_error stops upgrades only
    rows = {row["target"].split("/")[-1]: row for row in json.loads(report.read_text())["targets"]}
    assert rows["bad.db"]["result"] == "failed"
    assert "is not a SQLite database" in rows["bad.db"]["reason"]
    assert (rows["new.db"]["from"], rows["new.db"]["to"], rows["new.db"]["result"]) == (None, head, "pending")
    assert rows["new.db"]["reason"].startswith("0 applied, 1 pending; current: none")
    assert (rows["done.db"]["from"], rows["done.db"]["result"]) == (head, "current")

    # check and verify: the same groups and report; each target's own answer is its reason.
    for command, new, done in (
        ("check", ("failed", "run `make upgrade` first"), ("ok", "No new upgrade operations detected.")),
        ("verify", ("ok", "all 0 applied migration(s)"), ("ok", "all 1 applied migration(s)")),
    ):
        result = project.cli(command, f"--fleet={fleet}", f"--report={report}")
        failed = 2 if command == "check" else 1
        assert f"{failed} of 3 targets failed, 0 not looked at" in failed_line(result), command
        rows = {row["target"].split("/")[-1]: row for row in json.loads(report.read_text())["targets"]}
        assert (rows["bad.db"]["result"], rows["done.db"]["from"]) == ("failed", head)
        assert "is not a SQLite database" in rows["bad.db"]["reason"]
        for name, (outcome, said) in (("new.db", new), ("done.db", done)):
            assert rows[name]["result"] == outcome, (command, rows[name])
            assert said in rows[name]["reason"], (command, rows[name])
    assert (tenants / "new.db").stat().st_size == 0  # looking only
    assert (tenants / "bad.db").read_bytes() == CORRUPT


def test_a_fleet_refuses_migration_schema_and_a_report_nowhere(project: Project, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, '[[group]]\nname = "g"\ntargets = ["sqlite:///tenants/x.db"]\n')
    result = project.cli("upgrade", f"--fleet={fleet}", env={"MIGRATION_SCHEMA": "tenant_a"})
    assert "MIGRATION_SCHEMA is set, and a fleet names its tenant schemas itself" in failed_line(result)
    result = project.cli("upgrade", f"--fleet={fleet}", f"--report={tmp_path / 'no' / 'r.json'}")
    assert "its folder does not exist; nothing was run" in failed_line(result)
    assert not (tmp_path / "tenants" / "x.db").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["upgrade", "head", "--fleet=f.toml"],
        ["upgrade", "head", "--out-of-order=1", "--fleet=my $fleet.toml", "--report=r =1.json"],
        ["upgrade", "e0f32d6aab59", "--fleet=f.toml", "--report=r.json"],
        ["upgrade", "head", "--phase=expand", "--fleet=f.toml"],
        ["status", "--fleet=f.toml", "--report=r.json"],
        ["check", "--fleet=f.toml"],
        ["verify", "--report=r.json", "--fleet=-f.toml"],
    ],
)
def test_a_fleet_command_line_as_make_writes_it_is_read_as_argparse_reads_it(argv: list[str]) -> None:
    """The no-op fleet reads make's command line itself (argparse costs it 14 ms): the same options."""
    from dbtools.__main__ import as_make_writes_a_fleet, build_parser

    assert as_make_writes_a_fleet(argv) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["upgrade", "head", "--fleet", "f.toml"],  # a value after a space
        ["upgrade", "--fl=f.toml"],  # abbreviated
        ["upgrade", "--fleet=a", "--fleet=b"],  # repeated
        ["status", "--out-of-order=1", "--fleet=f.toml"],  # not status's
        ["upgrade", "--out_of_order=1", "--fleet=f.toml"],
        ["upgrade", "head", "--report=r.json"],  # no fleet
        ["upgrade", "--fleet="],
        ["upgrade", "--help"],
        ["downgrade", "--fleet=f.toml"],
    ],
)
def test_any_other_command_line_is_left_to_argparse(argv: list[str]) -> None:
    from dbtools.__main__ import as_make_writes_a_fleet

    assert as_make_writes_a_fleet(argv) is None


def test_make_passes_fleet_and_report_as_typed(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "my $fleet"
    folder.mkdir()
    fleet = _fleet(folder, '[[group]]\nname = "only"\ntargets = ["sqlite:///tenants/one.db"]\n')
    report = folder / "report $1.json"
    result = project.make("upgrade", f"fleet={fleet}", f"report={report}")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(report.read_text())["targets"]
    assert (row["target"], row["result"]) == ("sqlite:///tenants/one.db", "upgraded")
    assert _revision(folder / "tenants" / "one.db") == project.recorded_head()


def _has_a_child(pid: int) -> bool | None:
    """Whether ``pid`` has started a process; None where the kernel does not say."""
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return None


def test_ctrl_c_starts_nothing_more_and_lets_the_running_target_finish(
    project: Project, tmp_path: Path
) -> None:
    """A real process and a real SIGINT: the run in progress (waiting for a lock) ends at head."""
    fleet = _fleet(
        tmp_path,
        '[[group]]\nname = "all"\nparallel = 1\n'
        'targets = ["sqlite:///tenants/a.db", "sqlite:///tenants/b.db"]\n',
    )
    (tmp_path / "tenants" / "a.db").touch()
    report = tmp_path / "report.json"
    holder = sqlite3.connect(tmp_path / "tenants" / "a.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a.db's run waits for this write lock
    fleet_process = subprocess.Popen(
        [str(VENV / "bin" / "python"), "-m", "dbtools", "upgrade", f"--fleet={fleet}", f"--report={report}"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        deadline = time.monotonic() + 30
        while (started := _has_a_child(fleet_process.pid)) is False and time.monotonic() < deadline:
            time.sleep(0.02)
        if started is None:
            time.sleep(1.5)  # the imports, then the fork
        time.sleep(0.2)  # a.db's run is past its imports-free start, queued on the lock
        fleet_process.send_signal(signal.SIGINT)
        time.sleep(0.2)
        holder.execute("ROLLBACK")
        out, err = fleet_process.communicate(timeout=60)
    finally:
        holder.close()
        if fleet_process.poll() is None:
            fleet_process.kill()
    assert "interrupted, 1 not started" in failed_line(subprocess.CompletedProcess([], 1, out, err))
    rows = json.loads(report.read_text())["targets"]
    head = project.recorded_head()
    assert [(row["result"], row["from"], row["to"], row["reason"]) for row in rows] == [
        ("upgraded", None, head, ""),  # finished: at its new revision
        ("not started", None, None, "not started: the fleet was interrupted (Ctrl-C)"),  # at its old one
    ]
    assert _revision(tmp_path / "tenants" / "a.db") == project.recorded_head()
    assert not (tmp_path / "tenants" / "b.db").exists()


def test_on_a_terminal_the_fleet_shows_a_live_view_then_draws_its_table(
    project: Project, tmp_path: Path
) -> None:
    """A real process on a real pseudo-terminal: rich's live counts and its table, not the plain lines."""
    fleet = _fleet(
        tmp_path,
        '[[group]]\nname = "all"\non_error = "continue"\n'
        'targets = ["sqlite:///tenants/new.db", "sqlite:///tenants/bad.db"]\n',
    )
    (tmp_path / "tenants" / "bad.db").write_bytes(CORRUPT)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # rows, columns
    # The terminal's own size and kind, as a user's shell has them (pytest may set COLUMNS).
    settings = ("TTY_", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if not k.startswith(settings)}
    try:
        process = subprocess.Popen(
            [str(VENV / "bin" / "python"), "-m", "dbtools", "upgrade", f"--fleet={fleet}"],
            cwd=project.root,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env={**env, "TERM": "xterm-256color"},
        )
        os.close(terminal)
        chunks = []
        with suppress(OSError):  # EIO: the process closed the terminal
            while chunk := os.read(controller, 65536):
                chunks.append(chunk)
        assert process.wait(timeout=60) == 1
    finally:
        os.close(controller)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    assert "1 done, 0 running, 1 failed, 0 left" in shown  # the live counts, redrawn in place
    assert "2/2" in shown
    assert "failed sqlite:///tenants/bad.db: " in shown  # printed above the bar as it failed
    assert re.search(r"target +from +to +seconds +result +reason", shown)  # the table, drawn
    assert re.search(r"sqlite:///tenants/new\.db +- +[0-9a-f]{12} +[0-9.]+ +upgraded", shown)
    assert "[1 done," not in shown  # no plain lines on a terminal
    assert "FAILED: fleet" in shown

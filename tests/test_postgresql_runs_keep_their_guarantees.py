"""On PostgreSQL a run keeps its guarantees through non-transactional steps, retries, and timeouts.

The migration under test is the README's form of an index built without
blocking writes: ``CREATE INDEX CONCURRENTLY`` in an ``autocommit_block()``,
after dropping any index of that name a killed build left INVALID. Probes in
it record, from the server's own view, what the run holds at each point.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.commands.upgrade import upgrade
from tests import workers
from tests.helpers import (
    Project,
    as_from_a_terminal,
    base_env,
    current_revision,
    dump,
    engine_for,
    execute,
    failed_line,
    insert_users,
    query,
    rendered,
)
from tests.test_lint_refuses_data_loss import GUEST, NO_ROLE, ROLE

INDEX = "ix_users_email_lower"
PROBE = '''

def probe(where: str) -> None:
    """Record what this session holds: the migration lock and its two timeouts."""
    op.execute(
        "INSERT INTO probe SELECT '" + where + "', "
        "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted), "
        "current_setting('lock_timeout'), current_setting('statement_timeout')"
    )
'''
CONCURRENT_INDEX = f"""
probe("before")
with op.get_context().autocommit_block():
    probe("inside")
    op.drop_index("{INDEX}", "users", if_exists=True, postgresql_concurrently=True)
    op.create_index(
        "{INDEX}", "users", [sa.text("lower(email)")], postgresql_concurrently=True, if_not_exists=True
    )
probe("after")
"""
# Advisory locks on this database (pg_locks shows the whole server's).
HELD_HERE = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
PROBE_TABLE = (
    'op.create_table("probe", sa.Column("at", sa.Text), sa.Column("locks", sa.Integer), '
    'sa.Column("lock_timeout", sa.Text), sa.Column("statement_timeout", sa.Text))'
)


@pytest.fixture
def history(project_copy: Project) -> list[str]:
    """The users table, a probe table, then the concurrent index build."""
    revisions = project_copy.extend_history((PROBE_TABLE, 'op.drop_table("probe")'))
    revisions.append(
        project_copy.add_migration(
            CONCURRENT_INDEX,
            f'op.drop_index("{INDEX}", "users", if_exists=True, postgresql_concurrently=True)',
            imports=PROBE,
        )
    )
    return revisions


@pytest.fixture
def url(pg_admin_url: URL) -> Iterator[URL]:
    with pgserver.fresh_database(pg_admin_url) as fresh:
        yield fresh


def index_validity(url: URL) -> list[bool]:
    return [
        bool(valid)
        for (valid,) in query(
            url,
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            f"WHERE c.relname = '{INDEX}'",
        )
    ]


@pytest.fixture
def writer(url: URL) -> Iterator[sa.Connection]:
    """An application transaction that inserted a row and is still open.

    ``CREATE INDEX CONCURRENTLY`` waits for it (after committing the INVALID
    index's catalog entry), which holds the migration inside its non-transactional step.
    """
    engine = engine_for(url)
    conn = engine.connect()
    try:
        yield conn
    finally:
        conn.close()
        engine.dispose()


@pytest.fixture
def before_the_build(project_copy: Project, history: list[str], url: URL, writer: sa.Connection) -> None:
    """The database one revision before the index build, the writer's row not yet committed."""
    project_copy.migrate(url, history[1])
    writer.exec_driver_sql("INSERT INTO users (username, email) VALUES ('early', 'early@example.com')")


def start_upgrade(project: Project, url: URL) -> subprocess.Popen[str]:
    """``make upgrade`` in a process group of its own, as a deploy starts it, to be killed whole."""
    return subprocess.Popen(
        project.make_argv("upgrade"),
        env=base_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_from_a_terminal,  # a test worker may ignore SIGINT; a terminal does not
    )


def wait_for_build(url: URL) -> int:
    """The pid of the backend whose concurrent index build is waiting for a lock."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = query(
            url,
            "SELECT pid FROM pg_stat_activity WHERE starts_with(query, 'CREATE INDEX CONCURRENTLY') "
            "AND wait_event_type = 'Lock'",
        )
        if rows:
            return int(str(rows[0][0]))
        time.sleep(0.05)
    raise AssertionError("the concurrent index build never started waiting")


@pytest.mark.slow(seconds=3)
def test_concurrent_runs_apply_a_non_transactional_step_once_with_lock_and_timeouts_held(
    project_copy: Project, history: list[str], url: URL
) -> None:
    env = base_env(url, MIGRATION_STATEMENT_TIMEOUT="30")
    processes = [
        subprocess.Popen(
            project_copy.make_argv("upgrade"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 8, outputs

    # One run applied it: one row per probe. The lock and both timeouts held
    # after the COMMIT that autocommit_block() makes, and the online step ran
    # without a statement timeout.
    assert query(url, "SELECT at, locks, lock_timeout, statement_timeout FROM probe ORDER BY at DESC") == [
        ("inside", 1, "5s", "0"),
        ("before", 1, "5s", "30s"),
        ("after", 1, "5s", "30s"),
    ]
    assert index_validity(url) == [True]
    assert current_revision(url) == history[-1]
    # Released at the end: nothing of the run is left on the server.
    assert query(url, HELD_HERE) == [(0,)]


@pytest.mark.usefixtures("before_the_build")
def test_a_killed_build_keeps_others_out_and_the_next_upgrade_completes(
    project_copy: Project, history: list[str], url: URL, writer: sa.Connection
) -> None:
    run = start_upgrade(project_copy, url)
    try:
        build = wait_for_build(url)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # make and the migration with it, mid-step
        run.communicate(timeout=60)

    # Its server session lives on, and holds the migration lock: no second run can start.
    quick = workers.call(str(project_copy.root), url, upgrade, MIGRATION_LOCK_TIMEOUT="0.3")
    assert quick == 1
    assert current_revision(url) == history[1]

    # An operator kills the orphaned build: it leaves an INVALID index behind.
    query(url, f"SELECT pg_terminate_backend({build})")
    writer.commit()
    assert index_validity(url) == [False]

    result = project_copy.cli("upgrade", url=url)
    assert result.returncode == 0, result.stderr
    assert index_validity(url) == [True]
    assert current_revision(url) == history[-1]


@pytest.mark.usefixtures("before_the_build")
def test_a_failed_build_is_not_retried_says_so_and_the_next_upgrade_completes(
    project_copy: Project, history: list[str], url: URL, writer: sa.Connection
) -> None:
    # The build waits for the writer and gives up after the DDL lock timeout: inside the block,
    # where no statement timeout applies, a shorter one does not cap it.
    result = project_copy.cli(
        "upgrade", url=url, env={"MIGRATION_DDL_LOCK_TIMEOUT": "0.3", "MIGRATION_STATEMENT_TIMEOUT": "0.2"}
    )
    writer.commit()

    line = failed_line(result)
    assert "a non-transactional step (autocommit_block) had already committed" in line
    assert "MIGRATION_DDL_LOCK_TIMEOUT=0.3s; such a run is not retried automatically" in line
    assert "retrying" not in result.stderr
    assert index_validity(url) == [False]
    assert current_revision(url) == history[1]

    result = project_copy.cli("upgrade", url=url)
    assert result.returncode == 0, result.stderr
    assert index_validity(url) == [True]
    assert current_revision(url) == history[-1]


UNIQUE_PREFIX = """
with op.get_context().autocommit_block():
    op.drop_index("uq_users_prefix", "users", if_exists=True, postgresql_concurrently=True)
    op.create_index(
        "uq_users_prefix",
        "users",
        [sa.text("left(username, 16)")],
        unique=True,
        postgresql_concurrently=True,
        if_not_exists=True,
    )
"""


def test_a_unique_build_failing_on_duplicates_names_the_key_and_the_invalid_index_it_left(
    project_copy: Project, url: URL
) -> None:
    before = project_copy.heads()[0]
    revision = project_copy.add_migration(UNIQUE_PREFIX, 'op.drop_index("uq_users_prefix", "users")')
    project_copy.migrate(url, before)
    secret = str(url.password)  # the duplicated key, as a value a user's data might hold
    execute(
        url,
        "INSERT INTO users (username, email) VALUES "
        f"('{secret}a', 'a@example.com'), ('{secret}b', 'b@example.com')",
    )

    result = project_copy.cli("upgrade", url=url)
    line = failed_line(result)
    assert 'could not create unique index "uq_users_prefix" (Key ("left"(' in line
    assert "=(***) is duplicated.): the build left" in line
    assert "the build left the index uq_users_prefix INVALID, which the next `make upgrade` drops" in line
    assert secret not in result.stdout + result.stderr
    assert current_revision(url) == before
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'uq_users_prefix'::regclass"
    assert query(url, valid) == [(False,)]

    execute(url, f"UPDATE users SET username = 'c' WHERE username = '{secret}b'")
    assert project_copy.cli("upgrade", url=url).returncode == 0
    assert query(url, valid) == [(True,)]
    assert current_revision(url) == revision


@pytest.mark.usefixtures("before_the_build")
def test_ctrl_c_during_a_non_transactional_step_says_what_stays_applied(
    project_copy: Project, history: list[str], url: URL, writer: sa.Connection
) -> None:
    run = start_upgrade(project_copy, url)
    wait_for_build(url)
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it to the whole group
    stdout, stderr = run.communicate(timeout=60)
    writer.commit()

    line = failed_line(subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr))
    assert line.startswith("FAILED: interrupted; a non-transactional step (autocommit_block) had already")
    assert current_revision(url) == history[1]
    assert project_copy.cli("upgrade", url=url).returncode == 0
    assert index_validity(url) == [True]


def test_a_run_blocked_for_less_than_the_retry_window_succeeds_on_its_own(
    project_copy: Project, url: URL
) -> None:
    project_copy.migrate(url)
    project_copy.add_migration(
        'op.add_column("users", sa.Column("bio", sa.Text))', 'op.drop_column("users", "bio")'
    )
    reader = engine_for(url)
    with reader.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM users")  # an application read holds its lock
        run = subprocess.Popen(
            project_copy.make_argv("upgrade"),
            env=base_env(url, MIGRATION_DDL_LOCK_TIMEOUT="0.2"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert run.stderr is not None
        said = []
        for line in run.stderr:  # until the first attempt has given up
            said.append(line)
            if "retrying in" in line:
                break
        conn.rollback()  # the application's transaction ends
        said.extend(run.stderr)
        assert run.wait(timeout=60) == 0, "".join(said)
    reader.dispose()

    retries = [line for line in said if "retrying in" in line]
    assert retries[0].startswith("WARNI [dbtools.runtime.locking] attempt 1 of 6 waited longer than ")
    assert "MIGRATION_DDL_LOCK_TIMEOUT=0.2s for a table lock; rolled back" in retries[0]
    assert query(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'bio'") == [(1,)]


def test_a_statement_past_the_statement_timeout_fails_and_changes_nothing(
    project_copy: Project, url: URL
) -> None:
    project_copy.migrate(url)
    project_copy.add_migration(
        'op.create_table("report", sa.Column("id", sa.Integer, primary_key=True))\n'
        'op.execute("SELECT pg_sleep(5)")',
        'op.drop_table("report")',
    )
    before = dump(url)
    result = project_copy.cli("upgrade", url=url, env={"MIGRATION_STATEMENT_TIMEOUT": "0.3"})

    line = failed_line(result)
    assert "ran longer than MIGRATION_STATEMENT_TIMEOUT=0.3s and was cancelled; nothing was changed" in line
    assert dump(url) == before


def test_a_lock_wait_under_a_shorter_statement_timeout_is_a_lock_timeout_and_is_retried(
    project_copy: Project, url: URL
) -> None:
    """Issue 24: the statement timeout used to end the lock wait first, as a slow statement, not retried."""
    project_copy.migrate(url)
    project_copy.add_migration(
        'op.add_column("users", sa.Column("bio", sa.Text))', 'op.drop_column("users", "bio")'
    )
    before = dump(url)
    reader = engine_for(url)
    with reader.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM users")  # an application read holds its lock
        result = project_copy.cli(
            "upgrade",
            url=url,
            env={"MIGRATION_STATEMENT_TIMEOUT": "0.3", "MIGRATION_LOCK_RETRIES": "1"},
        )
        conn.rollback()
    reader.dispose()

    applied = "0.27s (MIGRATION_DDL_LOCK_TIMEOUT=5s, capped just under MIGRATION_STATEMENT_TIMEOUT=0.3s)"
    line = failed_line(result)
    assert (
        f"a migration statement waited longer than {applied} for a table lock held by other sessions" in line
    )
    assert "in each of 2 attempt(s) (MIGRATION_LOCK_RETRIES=1); nothing was changed" in line
    assert "raise MIGRATION_STATEMENT_TIMEOUT" in line
    assert "statement timeout" not in line
    retries = [entry for entry in result.stderr.splitlines() if "retrying in" in entry]
    assert len(retries) == 1
    assert f"attempt 1 of 2 waited longer than {applied} for a table lock; rolled back" in retries[0]
    assert dump(url) == before


def make_sql(project: Project, url: URL, revisions: str, **env: str) -> Path:
    """``make sql rev=<revisions>``, saved as a DBA would save it."""
    result = project.forked_alembic("upgrade", revisions, "--sql", url=url, env=env)
    assert result.returncode == 0, result.stderr
    script = project.root / f"upgrade-{revisions.replace(':', '-')}.sql"
    script.write_text(result.stdout)
    return script


def psql_argv(script: Path, url: URL) -> list[str]:
    """The script applied as postgresql-in-production.md says: psql, stopping at the first error."""
    bindir = pgserver.bindir()
    client = shutil.which("psql") or str(bindir / "psql" if bindir else "psql")
    # The same database URL, as libpq takes it; the password beside it, not in an argv a failure prints.
    dsn = URL.create("postgresql", url.username, None, url.host, url.port, url.database).render_as_string()
    return [client, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), dsn]


def psql_env(url: URL) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": str(url.password or "")}


def psql(script: Path, url: URL) -> subprocess.CompletedProcess[str]:
    argv, env = psql_argv(script, url), psql_env(url)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_make_sql_carries_the_lock_and_timeouts_to_sql_applied_by_hand(
    project_copy: Project, history: list[str], url: URL
) -> None:
    script = make_sql(project_copy, url, "head", MIGRATION_LOCK_TIMEOUT="0.5")
    statements = [line for line in script.read_text().splitlines() if line and not line.startswith("--")]
    assert statements[:3] == [
        "SET lock_timeout = '500ms';",
        "SELECT pg_advisory_lock(7362410518202611);",
        "DO $$",  # under the lock: is the database still where the script starts?
    ]
    assert statements.index("BEGIN;") - statements.index("$$;") == 3  # the two timeouts between

    holder = engine_for(url)
    with holder.connect() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_lock(7362410518202611)")  # a migration run
        blocked = psql(script, url)
    holder.dispose()
    assert blocked.returncode != 0
    assert "lock timeout" in blocked.stderr
    assert current_revision(url) is None

    applied = psql(script, url)
    assert applied.returncode == 0, applied.stderr
    assert current_revision(url) == history[-1]
    assert index_validity(url) == [True]
    assert query(url, HELD_HERE) == [(0,)]


@pytest.mark.usefixtures("before_the_build")
def test_make_sql_leaves_the_build_in_an_autocommit_block_unbounded_by_the_statement_timeout(
    project_copy: Project, history: list[str], url: URL, writer: sa.Connection
) -> None:
    """Issue 24: the script's session-wide statement_timeout also bounded CREATE INDEX CONCURRENTLY."""
    script = make_sql(project_copy, url, f"{history[1]}:head", MIGRATION_STATEMENT_TIMEOUT="0.3")
    statements = [line for line in script.read_text().splitlines() if line and not line.startswith("--")]
    outside = ["SET lock_timeout = '270ms';", "SET statement_timeout = '300ms';"]
    assert statements[statements.index("$$;") + 1 :][:3] == [*outside, "BEGIN;"]
    build = next(i for i, line in enumerate(statements) if line.startswith("CREATE INDEX CONCURRENTLY"))
    start = max(i for i, line in enumerate(statements[:build]) if line == "COMMIT;")
    end = statements.index("BEGIN;", build)
    # As a run has them: no statement timeout in the block, and the transaction's settings after it.
    assert statements[start + 1 : start + 3] == [
        "SET lock_timeout = '5000ms';",
        "SET statement_timeout = '0';",
    ]
    assert statements[end - 2 : end] == outside

    # The build waits for the writer's transaction longer than the statement timeout, and completes.
    run = subprocess.Popen(
        psql_argv(script, url), env=psql_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_build(url)
        time.sleep(0.5)
        writer.commit()
    finally:
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert current_revision(url) == history[-1]
    assert index_validity(url) == [True]
    assert query(url, "SELECT at, locks, lock_timeout, statement_timeout FROM probe ORDER BY at DESC") == [
        ("inside", 1, "5s", "0"),
        ("before", 1, "270ms", "300ms"),
        ("after", 1, "270ms", "300ms"),
    ]


def test_make_sql_applied_again_stops_before_its_data_step_runs_twice(
    project_copy: Project, url: URL
) -> None:
    """Issue 24, item 4: the second application used to re-run the UPDATE and exit 0."""
    full = make_sql(project_copy, url, "head")
    start = project_copy.add_migration(
        'op.add_column("users", sa.Column("bio", sa.Text, nullable=False, server_default=""))'
    )
    end = project_copy.add_migration("op.execute(\"UPDATE users SET bio = bio || 'x'\")")
    project_copy.migrate(url, start)
    insert_users(url, 1)
    step = make_sql(project_copy, url, f"{start}:{end}")

    assert psql(step, url).returncode == 0
    again = psql(step, url)  # applied twice, or queued behind a make upgrade that got there first
    assert again.returncode != 0
    assert (
        f"ERROR:  this make sql script starts at revision {start}, but the database is at revision {end}; "
        "nothing was run"
    ) in again.stderr
    assert "make current shows where the database is" in again.stderr
    assert query(url, "SELECT bio FROM users") == [("x",)]
    assert current_revision(url) == end
    assert query(url, HELD_HERE) == [(0,)]  # the lock went with psql's session

    from_base = psql(full, url)  # a script from an empty database, on one that is not
    assert from_base.returncode != 0
    assert "starts at an empty database (no alembic_version table), but the database is at revision" in (
        from_base.stderr
    )
    assert query(url, "SELECT bio FROM users") == [("x",)]


def test_a_unique_constraint_swap_keeps_uniqueness_when_its_build_fails_and_resumes(
    project_copy: Project, url: URL, writer: sa.Connection
) -> None:
    """``unique=True`` swapped for a composite ``UniqueConstraint``: built first, the old dropped last."""
    project_copy.migrate(url)
    before = project_copy.heads()[0]
    model = project_copy.root / "models" / "user.py"
    model.write_text(
        model.read_text()
        .replace(
            "from sqlalchemy import String, func", "from sqlalchemy import String, UniqueConstraint, func"
        )
        .replace("mapped_column(String(64), unique=True)", "mapped_column(String(64))")
        .replace(
            '    __tablename__ = "users"\n',
            '    __tablename__ = "users"\n    __table_args__ = (UniqueConstraint("username", "email"),)\n',
        )
    )
    assert project_copy.cli("upgrade").returncode == 0  # the SQLite database make migration compares with
    made = project_copy.cli("migration", "--message=username per email")
    assert made.returncode == 0, made.stderr
    insert_users(url, 3)
    # A transaction that holds a snapshot and no lock on users: a plain DROP CONSTRAINT goes through,
    # the concurrent build waits for it at its end, and gives up after the DDL lock timeout.
    writer.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    writer.exec_driver_sql("SELECT count(*) FROM alembic_version")

    result = project_copy.cli("upgrade", url=url, env={"MIGRATION_DDL_LOCK_TIMEOUT": "0.3"})
    writer.commit()
    assert "MIGRATION_DDL_LOCK_TIMEOUT=0.3s" in failed_line(result)
    assert current_revision(url) == before
    # The old constraint still holds: no moment without uniqueness.
    assert constraint_names(url) >= {"uq_users_username"}
    with pytest.raises(sa.exc.IntegrityError, match="uq_users_username"):
        execute(url, "INSERT INTO users (username, email) VALUES ('user0', 'other@example.com')")

    result = project_copy.cli("upgrade", url=url)
    assert result.returncode == 0, result.stderr
    assert current_revision(url) == project_copy.heads()[0]
    assert {"uq_users_username_email"} <= constraint_names(url)
    assert "uq_users_username" not in constraint_names(url)
    assert project_copy.cli("check", url=url).returncode == 0


def constraint_names(url: URL) -> set[str]:
    return {
        str(name)
        for (name,) in query(url, "SELECT conname FROM pg_constraint WHERE conrelid = 'users'::regclass")
    }


def test_an_enum_value_added_may_be_used_by_a_later_migration_of_the_same_run(
    project_copy: Project, url: URL
) -> None:
    """``ADD VALUE`` commits in an ``autocommit_block()``: a value used before a COMMIT is refused (55P04)."""
    project_copy.add_migration(ROLE, NO_ROLE)
    project_copy.add_migration(rendered(GUEST), rendered(GUEST.reverse()))
    project_copy.add_migration(
        "op.execute(\"ALTER TABLE users ALTER COLUMN role SET DEFAULT 'guest'\")",
        'op.execute("ALTER TABLE users ALTER COLUMN role DROP DEFAULT")',
    )
    result = project_copy.cli("upgrade", url=url)  # one run, from an empty database
    assert result.returncode == 0, result.stderr
    insert_users(url, 1)
    assert query(url, "SELECT role::text FROM users") == [("guest",)]

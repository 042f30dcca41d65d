"""Every bad input ends in one FAILED line, no traceback, no password, no change."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.autogenerate import portable
from dbtools.runtime.lockkeys import ADVISORY_LOCK_KEY
from models import Base
from tests.helpers import (
    Project,
    as_plain_user,
    base_env,
    current_revision,
    dump,
    engine_for,
    execute,
    failed_line,
    insert_users,
    rendered,
    url_string,
)


def sqlite_url(path: Path) -> URL:
    return URL.create("sqlite", database=str(path))


@pytest.fixture
def migrated(project: Project, database_url: URL) -> URL:
    project.migrate(database_url)
    insert_users(database_url, 3)
    return database_url


# --- SQLite files -----------------------------------------------------------


def test_missing_directory_fails_clearly_and_creates_nothing(project: Project, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "app.db"
    line = failed_line(project.cli("upgrade", url=sqlite_url(target)))
    assert f"the directory of the SQLite database {target} does not exist" in line
    assert "mkdir -p" in line
    assert not (tmp_path / "no").exists()


def test_file_that_is_not_sqlite_is_left_byte_identical(project: Project, tmp_path: Path) -> None:
    target = tmp_path / "app.db"
    content = b"name,email\nada,ada@example.com\n" * 100
    target.write_bytes(content)
    line = failed_line(project.cli("upgrade", url=sqlite_url(target)))
    assert f"{target} is not a SQLite database" in line
    assert target.read_bytes() == content


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_database_is_refused_unchanged(project: Project, tmp_path: Path, what: str) -> None:
    target = tmp_path / "app.db"
    url = sqlite_url(target)
    assert project.forked_alembic("upgrade", "base", url=url).returncode == 0  # an empty, unversioned file
    content = target.read_bytes()
    locked = target if what == "file" else tmp_path
    locked.chmod(0o555 if what == "directory" else 0o444)
    try:
        result = project.alembic("upgrade", "head", url=url, preexec_fn=as_plain_user)
    finally:
        locked.chmod(0o755 if what == "directory" else 0o644)
    line = failed_line(result)
    assert "read-only" in line
    assert str(target if what == "file" else tmp_path) in line
    assert target.read_bytes() == content


def test_database_locked_past_the_timeout_names_the_setting(project: Project, database_url: URL) -> None:
    holder = engine_for(database_url)
    with holder.connect() as conn:
        if database_url.get_backend_name() == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # another writer
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")  # another run
        started = time.monotonic()
        result = project.forked_alembic(
            "upgrade", "head", url=database_url, env={"MIGRATION_LOCK_TIMEOUT": "0.5"}
        )
        waited = time.monotonic() - started
        conn.rollback()
    holder.dispose()
    line = failed_line(result)
    assert "MIGRATION_LOCK_TIMEOUT=0.5s" in line
    assert 0.5 <= waited < 15
    assert current_revision(database_url) is None


def test_ddl_blocked_past_every_retry_fails_and_names_both_settings(
    project_copy: Project, pg_admin_url: URL
) -> None:
    with pgserver.fresh_database(pg_admin_url) as url:
        project_copy.migrate(url)
        project_copy.add_migration(
            'op.add_column("users", sa.Column("bio", sa.Text))', 'op.drop_column("users", "bio")'
        )
        before = dump(url)
        reader = engine_for(url)
        with reader.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM users")  # a long read holds its lock
            result = project_copy.forked_alembic(
                "upgrade",
                "head",
                url=url,
                env={"MIGRATION_DDL_LOCK_TIMEOUT": "0.2", "MIGRATION_LOCK_RETRIES": "1"},
            )
            conn.rollback()
        reader.dispose()
        line = failed_line(result)
        assert "MIGRATION_DDL_LOCK_TIMEOUT=0.2s" in line
        assert "in each of 2 attempt(s) (MIGRATION_LOCK_RETRIES=1); nothing was changed" in line
        retries = [entry for entry in result.stderr.splitlines() if "retrying in" in entry]
        assert len(retries) == 1
        assert retries[0].startswith("WARNI [dbtools.runtime.locking] attempt 1 of 2")
        assert dump(url) == before


# --- migration history --------------------------------------------------------


def test_unknown_revision_in_the_database_is_named(project: Project, migrated: URL) -> None:
    execute(migrated, "UPDATE alembic_version SET version_num = 'deadbeef1234'")
    before = dump(migrated)
    line = failed_line(project.cli("upgrade", url=migrated))
    assert "'deadbeef1234'" in line
    assert "Restore that migration file" in line
    assert dump(migrated) == before


def test_unversioned_users_table_is_refused_then_adopted_by_make_stamp(
    project: Project, database_url: URL
) -> None:
    engine = engine_for(database_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    insert_users(database_url, 2)
    before = dump(database_url)

    line = failed_line(project.cli("upgrade", url=database_url))
    assert "already has table(s) users but no migration history" in line
    assert "make stamp" in line
    assert dump(database_url) == before

    stamped = project.cli("stamp", url=database_url)
    assert stamped.returncode == 0, stamped.stderr
    assert current_revision(database_url) == project.heads()[0]
    again = project.cli("upgrade", url=database_url)
    assert again.returncode == 0, again.stderr
    assert dump(database_url)["users"] == before["users"]


def test_make_stamp_refuses_a_schema_that_differs_from_the_models(
    project: Project, database_url: URL
) -> None:
    execute(database_url, "CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(10))")
    before = dump(database_url)
    line = failed_line(project.cli("stamp", url=database_url))
    assert "differs from the models, so it was not stamped" in line
    assert dump(database_url) == before


def test_make_migration_refuses_a_database_behind_head(project_copy: Project, database_url: URL) -> None:
    project_copy.migrate(database_url)
    project_copy.add_migration('op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))')
    before = sorted(project_copy.versions.iterdir())
    line = failed_line(project_copy.cli("migration", "--message=next", url=database_url))
    assert "run `make upgrade` first" in line
    assert sorted(project_copy.versions.iterdir()) == before


def test_make_migration_refuses_several_heads(project_copy: Project, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "app.db")
    project_copy.migrate(url)
    base = project_copy.heads()[0]
    project_copy.add_migration("pass", down_revision=base)
    project_copy.add_migration("pass", down_revision=base)
    before = sorted(project_copy.versions.iterdir())
    line = failed_line(project_copy.cli("migration", "--message=next", url=url))
    assert "2 heads" in line
    assert "`make rebase`" in line
    assert sorted(project_copy.versions.iterdir()) == before


# --- DATABASE_URL -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("this is not a url", "DATABASE_URL is not a valid database URL"),
        ("oracle+nosuch://scott:tiger-secret@host/db", "names an unknown database"),
        (
            "mysql+pymysql://scott:tiger-secret@host/db",
            "driver for 'mysql+pymysql' is not installed (pymysql)",
        ),
    ],
    ids=["malformed", "unknown-dialect", "missing-driver"],
)
def test_bad_database_url_fails_clearly_without_the_password(
    project: Project, raw: str, expected: str
) -> None:
    result = project.cli("upgrade", env={"DATABASE_URL": raw})
    line = failed_line(result)
    assert expected in line
    assert "tiger-secret" not in result.stdout + result.stderr


@pytest.mark.parametrize("raw", ["nonsense://x", "oracle+nosuch://scott:tiger-secret@host/db"])
def test_make_sql_with_an_unknown_dialect_is_one_line(project: Project, raw: str) -> None:
    """Offline, no engine is made: the dialect is looked up when the URL is resolved."""
    result = project.forked_alembic("upgrade", "head", "--sql", env={"DATABASE_URL": raw})

    assert "names an unknown database" in failed_line(result)
    assert "tiger-secret" not in result.stdout + result.stderr


def test_missing_driver_error_says_how_to_install(project: Project) -> None:
    line = failed_line(project.cli("upgrade", env={"DATABASE_URL": "mysql+pymysql://u@h/db"}))
    assert "requirements.txt" in line
    assert "make install" in line


@pytest.fixture
def percent_role(pg_admin_url: URL) -> Iterator[URL]:
    """A login whose password needs percent-encoding in a URL: p@ss:word%1."""
    with pgserver.fresh_database(pg_admin_url) as url:
        admin = engine_for(pg_admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER ROLE {url.username} PASSWORD 'p@ss:word%%1'")
        admin.dispose()
        yield url.set(password="p@ss:word%1")


def test_percent_encoded_password_works(project: Project, percent_role: URL) -> None:
    raw = url_string(percent_role)
    assert "p%40ss%3Aword%251" in raw
    for target in ("upgrade", "check", "current"):
        result = project.cli(target, env={"DATABASE_URL": raw})
        assert result.returncode == 0, result.stderr
        assert "p@ss:word%1" not in result.stdout + result.stderr
    assert current_revision(percent_role) == project.heads()[0]


def test_wrong_password_fails_clearly_without_printing_it(project: Project, pg_admin_url: URL) -> None:
    with pgserver.fresh_database(pg_admin_url) as url:
        wrong = url.set(password="Wrong-Secret-42")
        result = project.cli("upgrade", url=wrong)
        line = failed_line(result)
        assert "refused the login" in line
        assert "***" in line
        assert "Wrong-Secret-42" not in result.stdout + result.stderr
        assert current_revision(url) is None


def test_unreachable_server_fails_clearly_without_printing_the_password(project: Project) -> None:
    nowhere = URL.create("postgresql+psycopg", "app", "Hidden-Secret-7", "127.0.0.1", 9, "app")
    result = project.cli("upgrade", url=nowhere)
    line = failed_line(result)
    assert "cannot reach the database at postgresql+psycopg://app:***@127.0.0.1:9/app" in line
    assert "Hidden-Secret-7" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("MIGRATION_LOCK_TIMEOUT", "soon", "is not a positive number of seconds"),
        ("MIGRATION_LOCK_RETRIES", "-1", "is not a whole number from 0 (never retry) to 100"),
        ("MIGRATION_LOCK_RETRIES", "²", "is not a whole number from 0 (never retry) to 100"),
        ("MIGRATION_STATEMENT_TIMEOUT", "1h", "is not 0 (no limit) or a positive number of seconds"),
    ],
)
def test_invalid_setting_is_refused_on_either_backend(
    project: Project, tmp_path: Path, variable: str, raw: str, expected: str
) -> None:
    """Even a setting only PostgreSQL reads: a typo must not wait for the day it matters."""
    line = failed_line(project.cli("upgrade", url=sqlite_url(tmp_path / "app.db"), env={variable: raw}))
    assert f"{variable}={raw!r} {expected}" in line
    assert not (tmp_path / "app.db").exists()


def test_sqlite_file_is_not_modified_by_a_refused_run(project: Project, tmp_path: Path) -> None:
    """The plain sqlite3 view: a refused run leaves no journal and no new tables."""
    target = tmp_path / "app.db"
    with sqlite3.connect(target) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    content = target.read_bytes()
    failed_line(project.cli("upgrade", url=sqlite_url(target)))
    assert target.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    assert sa.inspect(engine_for(sqlite_url(target))).get_table_names() == ["users"]


@pytest.mark.parametrize("raw", ["inf", "nan", "1e12"])
def test_a_timeout_that_cannot_be_honoured_is_refused(project: Project, tmp_path: Path, raw: str) -> None:
    result = project.cli("upgrade", url=sqlite_url(tmp_path / "app.db"), env={"MIGRATION_LOCK_TIMEOUT": raw})

    assert f"MIGRATION_LOCK_TIMEOUT='{raw}' is not a positive number of seconds" in failed_line(result)
    assert list(tmp_path.iterdir()) == []


def test_a_sub_millisecond_timeout_still_times_out_on_postgresql(project: Project, pg_admin_url: URL) -> None:
    with pgserver.fresh_database(pg_admin_url) as url:
        holder = engine_for(url)
        with holder.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")  # another run
            # Rounded down, 0.0004 s was lock_timeout = '0ms': PostgreSQL's "wait forever".
            result = project.cli("upgrade", url=url, env={"MIGRATION_LOCK_TIMEOUT": "0.0004"})
            conn.rollback()
        holder.dispose()
        assert "MIGRATION_LOCK_TIMEOUT=0.0004s" in failed_line(result)
        assert current_revision(url) is None


def test_a_full_disk_is_one_line_and_changes_nothing(project_copy: Project, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "app.db")
    project_copy.migrate(url)
    insert_users(url, 3)
    # SQLite's own size limit raises the same SQLITE_FULL a full disk does.
    project_copy.add_migration(
        """
        bind = op.get_bind()
        pages = bind.exec_driver_sql("PRAGMA page_count").scalar()
        bind.exec_driver_sql(f"PRAGMA max_page_count = {pages + 2}")
        op.create_table("blobs", sa.Column("data", sa.Text))
        op.execute("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200) "
                   "INSERT INTO blobs SELECT hex(randomblob(2000)) FROM n")
        """,
        'op.drop_table("blobs")',
    )
    before = dump(url)

    line = failed_line(project_copy.cli("upgrade", url=url, env={"MIGRATION_BACKUP_KEEP": "0"}))

    assert "is full" in line
    assert "nothing was changed" in line
    assert dump(url) == before


def test_a_read_only_database_can_still_be_inspected(project: Project, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "app.db")
    project.migrate(url)
    content = (tmp_path / "app.db").read_bytes()
    (tmp_path / "app.db").chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        results = {
            target: project.make(target, url=url, preexec_fn=as_plain_user)
            for target in ("status", "verify", "current", "check")
        }
    finally:
        tmp_path.chmod(0o755)
        (tmp_path / "app.db").chmod(0o644)
    for target, result in results.items():
        assert result.returncode == 0, (target, result.stderr)
    assert "checksum ok" in results["status"].stdout
    assert (tmp_path / "app.db").read_bytes() == content


@pytest.mark.parametrize("args", [("downgrade",), ("upgrade", "nope")], ids=["downgrade", "unknown-rev"])
def test_a_failing_command_creates_no_database(
    project: Project, tmp_path: Path, args: tuple[str, ...]
) -> None:
    line = failed_line(project.cli(*args, url=sqlite_url(tmp_path / "app.db")))

    assert "nothing was changed" in line or "does not exist yet" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["current", "check"])
def test_plain_alembic_that_only_looks_creates_no_database(
    project: Project, tmp_path: Path, command: str
) -> None:
    """As `make current` and `make check` refuse: only a command that migrates creates the file."""
    target = tmp_path / "app.db"

    line = failed_line(project.forked_alembic(command, url=sqlite_url(target)))

    assert f"{target} does not exist yet; run `make upgrade` to create it" in line
    assert list(tmp_path.iterdir()) == []


def test_a_role_without_create_on_public_is_one_line(project: Project, pg_admin_url: URL) -> None:
    with pgserver.fresh_database(pg_admin_url) as owned:
        guest = owned.set(username=f"{owned.username}_guest", password="Guest-Secret-3")
        admin = engine_for(pg_admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {guest.username} LOGIN PASSWORD 'Guest-Secret-3'")
        try:
            result = project.cli("upgrade", url=guest)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP ROLE {guest.username}")
            admin.dispose()
        line = failed_line(result)
        assert f"GRANT CREATE ON SCHEMA public TO {guest.username}" in line
        assert "Guest-Secret-3" not in result.stdout + result.stderr
        assert current_revision(owned) is None


def test_a_role_that_may_create_but_does_not_own_the_table_is_told_ownership_is_missing(
    project_copy: Project, pg_admin_url: URL
) -> None:
    """Issue 24: a role with CREATE on public was told to GRANT CREATE, which it had; it lacks ownership."""
    with pgserver.fresh_database(pg_admin_url) as owned:
        project_copy.migrate(owned)  # users belongs to the database's owner
        project_copy.add_migration(
            'op.add_column("users", sa.Column("bio", sa.Text))', 'op.drop_column("users", "bio")'
        )
        deployer = owned.set(username=f"{owned.username}_deploy", password="Deploy-Secret-4")
        admin = engine_for(pg_admin_url.set(database=owned.database), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {deployer.username} LOGIN PASSWORD 'Deploy-Secret-4'")
        try:
            execute(  # everything but ownership: it may create in public, and read and write every table
                owned,
                f"GRANT CREATE ON SCHEMA public TO {deployer.username}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {deployer.username}",
            )
            before = dump(owned)
            result = project_copy.cli("upgrade", url=deployer)
            assert dump(owned) == before
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP OWNED BY {deployer.username}")  # its grants, in this database
                conn.exec_driver_sql(f"DROP ROLE {deployer.username}")
            admin.dispose()
    line = failed_line(result)
    assert f"the role '{deployer.username}' does not own the table users" in line
    assert "(must be owner of table users)" in line
    assert f"ALTER TABLE users OWNER TO {deployer.username}" in line
    assert "GRANT CREATE" not in line
    assert "Deploy-Secret-4" not in result.stdout + result.stderr


def test_a_backend_terminated_mid_run_is_one_line_and_changes_nothing(
    project_copy: Project, pg_admin_url: URL
) -> None:
    with pgserver.fresh_database(pg_admin_url) as url:
        project_copy.migrate(url)
        insert_users(url, 3)
        project_copy.add_migration(
            'op.create_table("tmp", sa.Column("id", sa.Integer))\nop.execute("SELECT pg_sleep(30)")',
            'op.drop_table("tmp")',
        )
        before = dump(url)
        process = subprocess.Popen(
            project_copy.make_argv("upgrade"),
            env=base_env(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        admin = engine_for(pg_admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                for _ in range(300):  # as a failover or a DBA would, once the run is under way
                    killed = conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %(db)s "
                        "AND query LIKE %(sleeping)s AND pid <> pg_backend_pid()",
                        {"db": url.database, "sleeping": "%pg_sleep(30)%"},
                    ).all()
                    if killed:
                        break
                    time.sleep(0.05)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
            admin.dispose()
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        line = failed_line(result)
        assert "ended the connection during the run" in line
        assert dump(url) == before


# users.role, an enum type, then 'guest' added to it: the downgrade replaces the type.
ROLE = (
    "op.execute(\"CREATE TYPE user_role AS ENUM ('member', 'admin')\")\n"
    'role = sa.Enum("member", "admin", name="user_role", create_type=False)\n'
    'op.add_column("users", sa.Column("role", role))'
)
NO_ROLE = 'op.drop_column("users", "role")\nop.execute("DROP TYPE user_role")'


def test_an_enum_swap_that_cannot_run_is_one_line_and_changes_nothing(
    project_copy: Project, pg_admin_url: URL
) -> None:
    guest = portable.EnumValuesOp(
        "user_role", ("member", "admin"), ("member", "admin", "guest"), (("users", "role", None),)
    )
    project_copy.add_migration(ROLE, NO_ROLE)
    project_copy.add_migration(rendered(guest), rendered(guest.reverse()))
    with pgserver.fresh_database(pg_admin_url) as url:
        project_copy.migrate(url)
        insert_users(url, 3)
        execute(url, "UPDATE users SET role = 'guest' WHERE username <> 'user0'")
        before = dump(url)
        line = failed_line(project_copy.cli("downgrade", url=url))
        assert "2 row(s) of users.role hold 'guest', which enum type user_role loses" in line
        assert "nothing was changed. Update or delete those rows, then run again" in line
        assert dump(url) == before

        execute(url, "UPDATE users SET role = 'admin'", "CREATE TYPE user_role_old AS (x int)")
        before = dump(url)
        line = failed_line(project_copy.cli("downgrade", url=url))
        assert "the type user_role_old exists already" in line
        assert dump(url) == before

        execute(url, "DROP TYPE user_role_old")
        assert project_copy.cli("downgrade", url=url).returncode == 0


@pytest.mark.parametrize("command", ["status", "verify", "repair"])
def test_a_malformed_setting_is_refused_by_the_commands_that_only_look_too(
    project: Project, tmp_path: Path, command: str
) -> None:
    """Not only env.py's runs: every command validates every setting before it opens anything."""
    url = sqlite_url(tmp_path / "app.db")
    project.migrate(url)
    line = failed_line(project.cli(command, url=url, env={"MIGRATION_BACKENDS": "bogus"}))
    assert "MIGRATION_BACKENDS='bogus' is neither 'sqlite'" in line

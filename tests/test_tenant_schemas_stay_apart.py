"""Schema per tenant: ``MIGRATION_SCHEMA`` makes every single-target command work on one schema.

Each tenant's schema holds its own tables, ``alembic_version`` and
``alembic_checksums``; the migrations run unchanged with it as their default
schema, and one tenant never sees another's tables, nor those in ``public``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.runtime.lockkeys import lock_key
from tests.helpers import Project, engine_for, execute, failed_line, query

BOOKKEEPING = {"alembic_version", "alembic_checksums"}


@pytest.fixture
def pg_url(pg_admin_url: URL) -> Iterator[URL]:
    with pgserver.fresh_database(pg_admin_url) as url:
        yield url


def _tables(url: URL) -> dict[str, set[str]]:
    """Every schema of the database that holds a table, with its tables."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).all()
            schemas = {name for (name,) in conn.execute(sa.text("SELECT nspname FROM pg_namespace"))}
    finally:
        engine.dispose()
    found: dict[str, set[str]] = {name: set() for name in schemas if name in ("a", "b", "c", "public")}
    for schema, table in rows:
        found.setdefault(schema, set()).add(table)
    return found


def current_revision_of(url: URL, schema: str) -> object:
    (row,) = query(url, f"SELECT version_num FROM {schema}.alembic_version")
    return row[0]


def _columns(url: URL, schema: str) -> set[str]:
    engine = engine_for(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("users", schema=schema)}
    finally:
        engine.dispose()


def test_two_tenant_schemas_migrate_apart_through_every_command(project_copy: Project, pg_url: URL) -> None:
    def cli(tenant: str, *argv: str) -> str:
        result = project_copy.cli(*argv, url=pg_url, env={"MIGRATION_SCHEMA": tenant})
        assert result.returncode == 0, f"{argv} on {tenant}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    looking = project_copy.cli("status", url=pg_url, env={"MIGRATION_SCHEMA": "a"})
    assert 'schema "a" does not exist yet' in failed_line(looking)  # only make upgrade creates it
    assert "a" not in _tables(pg_url)

    cli("a", "upgrade")
    tables = _tables(pg_url)
    assert "users" in tables["a"]
    assert tables["a"] >= BOOKKEEPING
    assert tables["public"] == set()
    assert "b" not in tables
    cli("b", "upgrade")
    assert _tables(pg_url)["b"] == tables["a"]

    model = project_copy.root / "models" / "user.py"
    source = model.read_text()
    model.write_text(
        source.replace(
            "    def __repr__",
            "    display_name: Mapped[str | None] = mapped_column(String(100))\n\n    def __repr__",
        )
    )
    cli("a", "migration", "--message=display name")  # compared against tenant a alone
    (script,) = project_copy.versions.glob("*_display_name.py")
    text = script.read_text()
    assert "add_column" in text
    assert "alembic_version" not in text
    assert "schema=None" in text

    for tenant in ("a", "b"):
        cli(tenant, "upgrade")
        assert "display_name" in _columns(pg_url, tenant)
        assert "No new upgrade operations detected" in cli(tenant, "check")
        assert "OK: all" in cli(tenant, "verify")
        status = cli(tenant, "status")
        assert f"0 pending; current: {project_copy.heads()[0]}" in status
        assert "in sync" in status
        assert f"{tenant}, oldest first" in status  # the masked URL names the schema
    assert _tables(pg_url)["public"] == set()

    # A table of tenant a's alone: tenant a's comparison finds it, tenant b's never sees it.
    execute(
        pg_url, "CREATE TABLE a.only_a (id integer PRIMARY KEY)", "CREATE TABLE public.users (id integer)"
    )
    drift = project_copy.cli("check", url=pg_url, env={"MIGRATION_SCHEMA": "a"})
    assert drift.returncode != 0
    assert "only_a" in drift.stdout + drift.stderr
    assert "No new upgrade operations detected" in cli("b", "check")

    cli("a", "downgrade")  # one tenant steps back; the other stays at head
    assert "display_name" not in _columns(pg_url, "a")
    assert "display_name" in _columns(pg_url, "b")


@pytest.mark.parametrize("name", ["a b", "x;drop", "1tenant", "pg_tenant", "t" * 64, "tenänt"])
def test_an_invalid_schema_name_is_one_failed_line(project: Project, tmp_path: Path, name: str) -> None:
    url = URL.create("postgresql+psycopg", username="u", password="s3cret", host="127.0.0.1", database="d")
    result = project.cli("upgrade", url=url, env={"MIGRATION_SCHEMA": name})
    line = failed_line(result)
    assert "MIGRATION_SCHEMA" in line
    assert "s3cret" not in result.stdout + result.stderr


def test_a_schema_on_sqlite_is_one_failed_line(project: Project, tmp_path: Path) -> None:
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    for command in ("upgrade", "status"):
        result = project.cli(command, url=url, env={"MIGRATION_SCHEMA": "tenant_a"})
        assert "MIGRATION_SCHEMA is for PostgreSQL" in failed_line(result)
    assert not (tmp_path / "app.db").exists()


def test_tenants_of_one_database_migrate_side_by_side_and_one_tenant_still_queues(
    project: Project, pg_url: URL
) -> None:
    """Each schema's run takes its own advisory key: another tenant's run, or the default schema's, is
    no reason to wait; a second run on the same schema waits its turn, as on a database."""
    # Fixed forever, as the default key: runs of every version of the project must exclude each other.
    assert (lock_key(None), lock_key("tenant_a")) == (7362410518202611, 1887711756884156399)
    holder = engine_for(pg_url)
    try:
        with holder.connect() as conn:
            # A run in progress on tenant a, and one on the default schema, each holding its lock.
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({lock_key('tenant_a')})")
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({lock_key(None)})")
            started = time.monotonic()
            tenant_b = project.cli(
                "upgrade", url=pg_url, env={"MIGRATION_SCHEMA": "tenant_b", "MIGRATION_LOCK_TIMEOUT": "5"}
            )
            assert tenant_b.returncode == 0, tenant_b.stderr
            assert time.monotonic() - started < 4  # it never queued behind tenant a
            tenant_a = project.cli(
                "upgrade", url=pg_url, env={"MIGRATION_SCHEMA": "tenant_a", "MIGRATION_LOCK_TIMEOUT": "0.3"}
            )
            conn.rollback()
    finally:
        holder.dispose()
    assert "another migration run held the migration lock" in failed_line(tenant_a)
    assert current_revision_of(pg_url, "tenant_b") == project.recorded_head()
    assert "tenant_a" not in _tables(pg_url)  # queued, then gave up: no table of its own was created

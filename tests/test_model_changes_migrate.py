"""A model change becomes a migration that keeps every row, both ways."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import URL

from tests.helpers import Project, engine_for, failed_line, insert_users

CHANGED_MODEL = {
    # change a column's length
    "mapped_column(String(64), unique=True)": "mapped_column(String(128), unique=True)",
    # add an index
    "UTCDateTime(), server_default=func.current_timestamp()": (
        "UTCDateTime(), server_default=func.current_timestamp(), index=True"
    ),
    # add a nullable column and a NOT NULL column with a server default
    "    def __repr__": (
        "    display_name: Mapped[str | None] = mapped_column(String(100))\n"
        '    login_count: Mapped[int] = mapped_column(server_default="0")\n\n'
        "    def __repr__"
    ),
}


def _original_rows(url: URL) -> list[tuple[object, ...]]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    sa.text("SELECT id, username, email, created_at FROM users ORDER BY id")
                )
            ]
    finally:
        engine.dispose()


def _plain_indexes(engine: sa.Engine) -> set[str]:
    """Index names, leaving out those PostgreSQL reports for unique constraints."""
    indexes = sa.inspect(engine).get_indexes("users")
    return {str(i["name"]) for i in indexes if "duplicates_constraint" not in i}


def test_model_change_autogenerates_a_migration_that_round_trips_with_rows(
    project_copy: Project, database_url: URL
) -> None:
    """``make migration`` through make; the commands around it forked, as ``make check`` etc. run them."""
    project_copy.migrate(database_url)
    insert_users(database_url, 50)
    rows = _original_rows(database_url)

    model = project_copy.root / "models" / "user.py"
    source = model.read_text()
    for old, new in CHANGED_MODEL.items():
        assert old in source
        source = source.replace(old, new)
    model.write_text(source)

    drift = project_copy.cli("check", url=database_url)
    assert drift.returncode != 0
    assert "New upgrade operations detected" in drift.stdout + drift.stderr

    made = project_copy.make("migration", "msg=profile fields", url=database_url)
    assert made.returncode == 0, made.stderr
    (script,) = project_copy.versions.glob("*_profile_fields.py")
    (new,) = project_copy.heads()
    assert new in script.name
    assert project_copy.recorded_head() == new  # migrations/head.txt kept current
    text = script.read_text()
    assert "models" not in text.split('"""', 2)[2]  # never imports application code
    for op in ("add_column", "alter_column", "create_index", "drop_column", "drop_index"):
        assert op in text

    up = project_copy.cli("upgrade", "head", url=database_url)
    assert up.returncode == 0, up.stderr
    assert _original_rows(database_url) == rows
    engine = engine_for(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT DISTINCT login_count, display_name FROM users")).all() == [
                (0, None)
            ]
        columns = {c["name"]: c for c in sa.inspect(engine).get_columns("users")}
        assert cast(sa.String, columns["username"]["type"]).length == 128
        assert _plain_indexes(engine) == {"ix_users_created_at"}
    finally:
        engine.dispose()
    check = project_copy.cli("check", url=database_url)
    assert check.returncode == 0, check.stdout + check.stderr

    down = project_copy.cli("downgrade", "-1", url=database_url)
    assert down.returncode == 0, down.stderr
    assert _original_rows(database_url) == rows
    engine = engine_for(database_url)
    try:
        columns = {c["name"]: c for c in sa.inspect(engine).get_columns("users")}
        assert list(columns) == ["id", "username", "email", "created_at"]
        assert cast(sa.String, columns["username"]["type"]).length == 64
        assert _plain_indexes(engine) == set()
    finally:
        engine.dispose()


def test_a_stale_snapshot_is_named_when_a_key_is_wide(project_copy: Project, tmp_path: Path) -> None:
    """A BIGINT key, and schema/postgresql.sql at an older revision than the database: a note, no crash."""
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    project_copy.add_migration(
        'op.add_column("users", sa.Column("nickname", sa.String(32)))',
        'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("nickname")',
    )
    project_copy.migrate(url)  # the snapshot is not at this revision: no `make schema` since
    model = project_copy.root / "models" / "user.py"
    model.write_text(
        model.read_text()
        .replace("from sqlalchemy import String", "from sqlalchemy import BigInteger, String")
        .replace("mapped_column(primary_key=True", "mapped_column(BigInteger, primary_key=True")
        .replace(
            "    def __repr__",
            "    nickname: Mapped[str | None] = mapped_column(String(32))\n\n    def __repr__",
        )
    )

    made = project_copy.make("migration", "msg=big ids", url=url)

    assert made.returncode == 0, made.stderr
    assert "schema/postgresql.sql is not at this database's revision" in made.stdout


def test_sqlite_only_projects_need_no_snapshot_and_have_what_sqlite_cannot_hold_refused(
    project_copy: Project, tmp_path: Path
) -> None:
    """MIGRATION_BACKENDS=sqlite: no PostgreSQL facts to keep current, and nothing silently lost."""
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    sqlite_only = {"MIGRATION_BACKENDS": "sqlite"}
    project_copy.add_migration('op.add_column("users", sa.Column("nickname", sa.String(32)))')
    project_copy.migrate(url)  # schema/postgresql.sql is now behind: no `make schema` since
    model = project_copy.root / "models" / "user.py"
    plain = model.read_text().replace(
        "    def __repr__", "    nickname: Mapped[str | None] = mapped_column(String(32))\n\n    def __repr__"
    )
    model.write_text(
        plain.replace("String(320), unique=True", 'String(320), unique=True, comment="where we write"')
        + '\n\nIndex("ix_users_recent", User.created_at, postgresql_where=User.id > 100)\n'
    )
    model.write_text(
        model.read_text().replace("from sqlalchemy import String", "from sqlalchemy import Index, String")
    )
    before = sorted(project_copy.versions.iterdir())

    for command in (("migration", "--message=recent users"), ("check",)):
        line = failed_line(project_copy.cli(*command, url=url, env=sqlite_only))
        assert "MIGRATION_BACKENDS=sqlite, but SQLite cannot hold what the models give" in line
        assert "users.email: a comment" in line
        assert "users index ix_users_recent: postgresql_where" in line
    assert sorted(project_copy.versions.iterdir()) == before

    # An enum type, which PostgreSQL's facts would otherwise be read for.
    model.write_text(
        plain.replace("String(64), unique=True", "String(64), unique=True, index=True").replace(
            "    def __repr__",
            '    plan: Mapped[str | None] = mapped_column(Enum("free", "paid", name="plan"))\n'
            "\n    def __repr__",
        )
    )
    model.write_text(
        model.read_text().replace("from sqlalchemy import String", "from sqlalchemy import Enum, String")
    )
    made = project_copy.cli("migration", "--message=usernames indexed", url=url, env=sqlite_only)
    assert made.returncode == 0, made.stderr
    assert "schema/postgresql.sql" not in made.stdout  # no PostgreSQL facts asked for, none stale
    assert project_copy.cli("upgrade", url=url, env=sqlite_only).returncode == 0
    assert project_copy.cli("check", url=url, env=sqlite_only).returncode == 0

    line = failed_line(project_copy.cli("check", url=url, env={"MIGRATION_BACKENDS": "mysql"}))
    assert "MIGRATION_BACKENDS='mysql' is neither 'sqlite'" in line

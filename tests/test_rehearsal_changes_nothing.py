"""`make rehearse`: pending migrations run for real and are timed; the database is left as it was."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.helpers import Project, current_revision, dump, failed_line, insert_users, recorded_checksums


@pytest.fixture
def history(project_copy: Project) -> list[str]:
    return project_copy.extend_history(
        (
            'op.add_column("users", sa.Column("nickname", sa.String(32), server_default="anon", '
            "nullable=False))",
            'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("nickname")',
        ),
        ('op.execute("UPDATE users SET nickname = substr(username, 1, 3) WHERE id % 2 = 0")', "pass"),
    )


def timed_lines(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines() if re.search(r"\d+\.\d{3} s$", line)]


def test_rehearsal_times_each_pending_migration_and_changes_nothing(
    project_copy: Project, history: list[str], database_url: URL
) -> None:
    first, second, third = history
    project_copy.migrate(database_url, first)
    insert_users(database_url, 500)
    before = dump(database_url)
    checksums = recorded_checksums(database_url)
    path = Path(str(database_url.database))
    raw = path.read_bytes() if database_url.get_backend_name() == "sqlite" else b""

    result = project_copy.cli("rehearse", url=database_url)

    assert result.returncode == 0, result.stderr
    assert timed_lines(result.stdout) == [second, third]
    assert "2 migration(s) would take" in result.stdout
    assert "Rolled back: the database is exactly as it was." in result.stdout
    assert dump(database_url) == before
    assert recorded_checksums(database_url) == checksums
    assert current_revision(database_url) == first
    if database_url.get_backend_name() == "sqlite":
        assert "a copy of" in result.stdout
        assert path.read_bytes() == raw
        left = {p.name for p in path.parent.iterdir()} - {"project"}
        assert left == {"app.db"}  # no copy, journal or backup left behind
    else:
        assert "in a transaction that was rolled back" in result.stdout

    partial = project_copy.cli("rehearse", second, url=database_url)
    assert partial.returncode == 0, partial.stderr
    assert timed_lines(partial.stdout) == [second]

    # The real run then does what the rehearsal did.
    project_copy.migrate(database_url)
    nothing = project_copy.cli("rehearse", url=database_url)
    assert "Nothing to rehearse" in nothing.stdout


def test_rehearsal_refuses_an_edited_applied_migration(
    project_copy: Project, history: list[str], database_url: URL
) -> None:
    project_copy.migrate(database_url, history[0])
    (path,) = project_copy.versions.glob(f"*{history[0]}*.py")
    path.write_text(path.read_text() + "# edited\n")
    result = project_copy.cli("rehearse", url=database_url)
    assert result.returncode != 0
    assert "was edited after it was applied" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_migration_that_commits_midway_cannot_be_rehearsed(
    project_copy: Project, database_url: URL
) -> None:
    project_copy.migrate(database_url)
    added = project_copy.add_migration(
        'with op.get_context().autocommit_block():\n    op.create_index("ix_c", "users", ["created_at"])',
        'op.drop_index("ix_c")',
    )
    before = dump(database_url)

    line = failed_line(project_copy.cli("rehearse", url=database_url))

    assert f"migration {added} uses op.get_context().autocommit_block()" in line
    assert "cannot be rehearsed" in line
    assert dump(database_url) == before


def test_a_copy_left_by_a_killed_rehearsal_is_removed(project_copy: Project, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    url = URL.create("sqlite", database=str(folder / "app.db"))
    project_copy.migrate(url)
    abandoned = folder / ".app.db.rehearsal-999999999-abcd1234"  # no such process
    abandoned.mkdir()
    (abandoned / "app.db").write_bytes(b"a copy")

    result = project_copy.cli("rehearse", url=url)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["app.db"]

"""`make rehearse`: pending migrations run for real and are timed; the database is left as it was."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.helpers import Project, current_revision, dump, insert_users, recorded_checksums


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

    result = project_copy.make("rehearse", url=database_url)

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

    partial = project_copy.make("rehearse", f"rev={second}", url=database_url)
    assert partial.returncode == 0, partial.stderr
    assert timed_lines(partial.stdout) == [second]

    # The real run then does what the rehearsal did.
    project_copy.migrate(database_url)
    nothing = project_copy.make("rehearse", url=database_url)
    assert "Nothing to rehearse" in nothing.stdout


def test_rehearsal_refuses_an_edited_applied_migration(
    project_copy: Project, history: list[str], database_url: URL
) -> None:
    project_copy.migrate(database_url, history[0])
    (path,) = project_copy.versions.glob(f"*{history[0]}*.py")
    path.write_text(path.read_text() + "# edited\n")
    result = project_copy.make("rehearse", url=database_url)
    assert result.returncode != 0
    assert "was edited after it was applied" in result.stderr
    assert "Traceback" not in result.stderr

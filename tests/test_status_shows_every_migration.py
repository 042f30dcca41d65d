"""`make status`: every revision applied or pending, its checksum, and model drift, in one view."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL

from tests.helpers import Project, execute


def revision_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"^\[[X ]\] ", line)]


def test_without_a_database_everything_is_pending_and_nothing_is_created(project_copy: Project) -> None:
    first = project_copy.heads()[0]
    second = project_copy.add_migration('op.create_index("ix_users_email", "users", ["email"])')

    result = project_copy.cli("status")

    assert result.returncode == 0, result.stderr
    lines = revision_lines(result.stdout)
    assert [line[:3] for line in lines] == ["[ ]", "[ ]"]
    assert lines[0].startswith(f"[ ] {first}")
    assert lines[1].startswith(f"[ ] {second}")
    assert all("pending" in line for line in lines)
    summary = result.stdout.splitlines()[-1]
    assert "0 applied, 2 pending; current: none (empty database)" in summary
    # The index the hand-written migration adds is not in the models.
    assert "models: DIFFER from migrations (remove_index ix_users_email" in summary
    assert "scratch SQLite database" in summary
    assert not (project_copy.root / "app.db").exists()


def test_oldest_first_applied_then_pending_with_checksums_and_current(
    project_copy: Project, database_url: URL
) -> None:
    first = project_copy.heads()[0]
    second = project_copy.add_migration('op.execute("UPDATE users SET email = lower(email)")')
    third = project_copy.add_migration('op.execute("UPDATE users SET username = lower(username)")')
    project_copy.migrate(database_url, second)

    at_second = project_copy.cli("status", url=database_url)

    assert at_second.returncode == 0, at_second.stderr
    lines = revision_lines(at_second.stdout)
    assert [line.split()[:2] for line in lines] == [["[X]", first], ["[X]", second], ["[", "]"]]
    assert lines[2].startswith(f"[ ] {third}")
    assert lines[0].endswith("checksum ok")
    assert lines[1].endswith("checksum ok  <- current")
    assert "pending" in lines[2]
    assert at_second.stdout.splitlines()[-1].startswith(f"2 applied, 1 pending; current: {second}; ")
    assert "models: in sync with migrations" in at_second.stdout

    (path,) = project_copy.versions.glob(f"*{first}*.py")
    path.write_text(path.read_text() + "# edited\n")
    assert project_copy.cli("upgrade", url=database_url).returncode != 0
    edited = project_copy.cli("status", url=database_url)
    assert edited.returncode == 0, edited.stderr
    assert revision_lines(edited.stdout)[0].endswith("EDITED since applied")
    assert "checksums: 1 problem(s), see `make verify`" in edited.stdout


def test_at_head_drift_is_checked_on_the_database_itself(project_copy: Project, database_url: URL) -> None:
    project_copy.migrate(database_url)
    model = project_copy.root / "models" / "user.py"
    model.write_text(
        model.read_text().replace(
            "    def __repr__",
            "    nickname: Mapped[str | None] = mapped_column(String(32))\n\n    def __repr__",
        )
    )

    result = project_copy.cli("status", url=database_url)

    assert result.returncode == 0, result.stderr
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("1 applied, 0 pending")
    assert "models: DIFFER from migrations (add_column users nickname)" in summary
    assert "checked on this database, at head" in summary


def test_migrations_that_only_run_on_postgresql_leave_drift_unknown(project_copy: Project) -> None:
    project_copy.add_migration("op.execute(\"COMMENT ON TABLE users IS 'people'\")")

    result = project_copy.cli("status")

    assert result.returncode == 0, result.stderr
    summary = result.stdout.splitlines()[-1]
    assert "models: unknown (not checked: the migrations do not run on SQLite" in summary
    assert "run `make upgrade`, then `make check`" in summary


CONCURRENT_INDEX = """
with op.get_context().autocommit_block():
    op.create_index("ix_users_created_at", "users", ["created_at"])
"""


def test_a_pending_migration_with_an_autocommit_block_is_shown(project_copy: Project, tmp_path: Path) -> None:
    database_url = URL.create(
        "sqlite", database=str(tmp_path / "app.db")
    )  # drift is checked on SQLite anyway
    project_copy.migrate(database_url)
    added = project_copy.add_migration(CONCURRENT_INDEX, 'op.drop_index("ix_users_created_at")')

    result = project_copy.cli("status", url=database_url)

    assert result.returncode == 0, result.stderr
    assert revision_lines(result.stdout)[-1].startswith(f"[ ] {added}")
    assert "models: DIFFER from migrations (remove_index ix_users_created_at" in result.stdout


def test_two_heads_are_shown_and_drift_is_still_checked(project_copy: Project) -> None:
    head = project_copy.heads()[0]
    left = project_copy.add_migration("pass", down_revision=head)
    right = project_copy.add_migration("pass", down_revision=head)

    result = project_copy.cli("status")

    assert result.returncode == 0, result.stderr
    assert {line[4:16] for line in revision_lines(result.stdout)} == {head, left, right}
    assert "models: in sync with migrations (checked on a scratch SQLite database" in result.stdout


def test_with_the_current_file_missing_and_no_record_applied_and_pending_are_unknown(
    project_copy: Project, tmp_path: Path
) -> None:
    """The history behind the missing file cannot be walked, and no checksum record says what ran."""
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    first = project_copy.heads()[0]
    second = project_copy.add_migration('op.execute("UPDATE users SET email = lower(email)")')
    project_copy.migrate(url)
    execute(url, "DROP TABLE alembic_checksums")  # migrated before checksums were recorded
    next(project_copy.versions.glob(f"*{second}*.py")).unlink()

    result = project_copy.cli("status", url=url)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"[?] {first}  create users table  unknown" in lines
    assert f"[X] {second}  (no such file)  FILE MISSING  <- current" in lines
    assert lines[-1].startswith(
        f"applied and pending unknown: the file of {second}, the current revision, is missing "
        "and nothing records what ran before it; current: "
    )

"""A run that fails part-way leaves the database exactly as it was.

Faults are injected with extra migrations in a copy of the project, after a
good migration in the same run, so the rollback has to undo that one too.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from tests.helpers import Project, current_revision, dump, insert_users

GOOD = 'op.create_table("first", sa.Column("id", sa.Integer, primary_key=True))'

FAULTS = {
    "after-creating-a-table": """
        op.create_table("scratch", sa.Column("id", sa.Integer, primary_key=True))
        raise RuntimeError("injected fault")
    """,
    "after-a-batch-table-rebuild": """
        with op.batch_alter_table("users", recreate="always") as batch:
            batch.add_column(sa.Column("nickname", sa.String(20)))
            batch.alter_column("username", type_=sa.String(100), existing_type=sa.String(64))
        raise RuntimeError("injected fault")
    """,
    "after-inserting-rows": """
        op.execute("INSERT INTO users (username, email) VALUES ('ghost', 'ghost@example.com')")
        op.execute("UPDATE users SET email = 'changed' || email")
        raise RuntimeError("injected fault")
    """,
}


@pytest.fixture
def populated(project_copy: Project, database_url: URL) -> URL:
    project_copy.migrate(database_url)
    insert_users(database_url, 20)
    return database_url


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_failing_migration_leaves_database_unchanged(
    project_copy: Project, populated: URL, fault: str
) -> None:
    before = dump(populated)
    project_copy.add_migration(GOOD, 'op.drop_table("first")')
    bad = project_copy.add_migration(fault)

    result = project_copy.forked_alembic("upgrade", "head", url=populated)
    assert result.returncode != 0
    assert "injected fault" in result.stderr
    assert dump(populated) == before

    # No leftovers block the next run once the migration is fixed.
    (script,) = project_copy.versions.glob(f"*{bad}*")
    script.write_text(script.read_text().replace('raise RuntimeError("injected fault")', "pass"))
    project_copy.migrate(populated)  # the same env.py and command, forked
    assert current_revision(populated) == bad


def test_failing_run_on_a_new_database_leaves_it_empty(project_copy: Project, database_url: URL) -> None:
    before = dump(database_url)
    project_copy.add_migration(FAULTS["after-creating-a-table"])
    result = project_copy.forked_alembic("upgrade", "head", url=database_url)
    assert result.returncode != 0
    assert dump(database_url) == before  # not even alembic_version or users


def test_failing_downgrade_leaves_database_unchanged(project_copy: Project, database_url: URL) -> None:
    project_copy.add_migration(
        GOOD,
        """
        op.drop_table("first")
        op.execute("DELETE FROM users")
        raise RuntimeError("injected fault")
        """,
    )
    project_copy.migrate(database_url)
    insert_users(database_url, 5)
    before = dump(database_url)
    result = project_copy.forked_alembic("downgrade", "base", url=database_url)
    assert result.returncode != 0
    assert "injected fault" in result.stderr
    assert dump(database_url) == before

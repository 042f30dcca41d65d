"""On PostgreSQL the generated online forms let the application write while they run.

The generated forms themselves are deployed to both backends by the
evolution corpus (tests/evolution.py). Here: a writer commits while a
concurrent index build and a constraint validation are running, and the
lint tells a table rewrite from a type change that only touches the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.autogenerate.nonblocking import REWRITE_RECIPE
from dbtools.commands import migration
from tests import workers
from tests.helpers import Project, engine_for, insert_users

# 50 ms a row, so the build and the validation last long enough to write during them.
SLOW_KEY = (
    "CREATE FUNCTION slow_key(i integer) RETURNS integer IMMUTABLE LANGUAGE sql "
    "AS 'SELECT i FROM pg_sleep(0.05)'"
)
# As dbtools.autogenerate.nonblocking writes them.
ONLINE_INDEX_AND_CHECK = """
with op.get_context().autocommit_block():
    op.drop_index("ix_users_slow", table_name="users", postgresql_concurrently=True, if_exists=True)
    op.create_index(
        "ix_users_slow", "users", [sa.text("slow_key(id)")], postgresql_concurrently=True, if_not_exists=True
    )
op.execute("ALTER TABLE users ADD CONSTRAINT ck_users_slow CHECK (slow_key(id) > 0) NOT VALID")
with op.get_context().autocommit_block():
    op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_slow")
"""


def running(url: URL, statement: str) -> bool:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND starts_with(query, :s)"
            return bool(conn.execute(sa.text(sql), {"s": statement}).scalar())
    finally:
        engine.dispose()


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_writer_commits_while_the_index_builds_and_the_constraint_validates(
    project_copy: Project, pg_admin_url: URL
) -> None:
    with pgserver.fresh_database(pg_admin_url) as url:
        project_copy.migrate(url)
        insert_users(url, 20)
        engine = engine_for(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(SLOW_KEY)
        project_copy.add_migration(ONLINE_INDEX_AND_CHECK)
        run = workers.start(project_copy.ini, url)
        try:
            for step, prefix in (
                ("build", "CREATE INDEX CONCURRENTLY"),
                ("validation", "ALTER TABLE users VALIDATE"),
            ):
                wait_until(lambda: running(url, prefix))  # noqa: B023 (called at once, in this iteration)
                with engine.begin() as conn:  # the application writes, and commits
                    conn.exec_driver_sql(
                        f"INSERT INTO users (username, email) VALUES ('during {step}', '{step}@example.com')"
                    )
                assert running(url, prefix), f"the {step} ended before the write committed: nothing was shown"
        finally:
            run.join(timeout=60)
        assert run.exitcode == 0
        with engine.connect() as conn:
            valid = conn.exec_driver_sql(
                "SELECT (SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_users_slow'::regclass), "
                "(SELECT convalidated FROM pg_constraint WHERE conname = 'ck_users_slow')"
            ).one()
            written = conn.exec_driver_sql(
                "SELECT count(*) FROM users WHERE starts_with(username, 'during ')"
            ).scalar()
        engine.dispose()
        assert tuple(valid) == (True, True)
        assert written == 2


def generate(project: Project, message: str) -> str:
    """``make migration``'s function, forked, on the project's app.db; then apply it."""
    url = URL.create("sqlite", database=str(project.root / "app.db"))

    def work(config: Config) -> None:
        migration.migration(config, message)

    assert workers.call(str(project.root), url, work) == 0
    project.migrate(url)
    (path,) = project.versions.glob(f"*_{message.replace(' ', '_')}.py")
    return path.read_text()


def test_a_table_rewrite_carries_its_recipe_and_needs_an_acknowledgement_a_widening_does_not(
    project_copy: Project,
) -> None:
    project_copy.migrate(URL.create("sqlite", database=str(project_copy.root / "app.db")))
    model = project_copy.root / "models" / "user.py"
    email = "    email: Mapped[str] = mapped_column(String(320), unique=True)\n"

    # Unique: its type change stays one step (a plain column's becomes expand/contract,
    # tests/test_breaking_changes_expand_then_contract.py).
    score = "score: Mapped[int | None] = mapped_column(unique=True)\n"
    model.write_text(model.read_text().replace(email, email + "    " + score))
    generate(project_copy, "score")
    wider = score.replace("mapped_column(", "mapped_column(BigInteger, ")
    model.write_text(model.read_text().replace(score, wider))
    model.write_text(
        model.read_text().replace("from sqlalchemy import ", "from sqlalchemy import BigInteger, ")
    )
    assert REWRITE_RECIPE[0] in generate(project_copy, "big score")
    model.write_text(model.read_text().replace("String(320)", "String(400)"))
    upgrade, downgrade = generate(project_copy, "longer emails").split("def downgrade")
    assert REWRITE_RECIPE[0] not in upgrade  # a longer varchar: PostgreSQL changes its catalog only
    assert REWRITE_RECIPE[0] in downgrade  # a shorter one: every row is checked again

    result = project_copy.cli("lint")
    assert result.returncode == 1
    assert "big_score.py: changing-column-type" in result.stderr
    assert "longer_emails.py: changing-column-type" not in result.stderr  # varchar widening: catalog only

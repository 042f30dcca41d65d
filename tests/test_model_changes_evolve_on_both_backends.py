"""Every model change in the corpus autogenerates, against SQLite, one migration for both backends.

For each change (``tests/evolution.py``): edit the models, autogenerate as
``make migration`` does against SQLite (its renames answered as ``renames=``
does), apply the README's hand edit if the change needs one, then on SQLite
and on a real PostgreSQL, with rows in
every table: upgrade, ``check`` clean, downgrade, upgrade again; values of
surviving columns are kept throughout, the downgrade brings back each column
with the type it had, and the application can still write.
``schema/postgresql.sql`` is refreshed after each change, as the README's
workflow does, because autogenerate reads PostgreSQL's facts from it.

The commands run in forked processes (``tests.workers.call``): the same
functions ``make`` calls, without half a second of imports each. ``make
migration`` itself is driven through the CLI in test_model_changes_migrate.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.commands import check, migration
from dbtools.run import Run
from dbtools.runtime import snapshot
from tests import workers
from tests.evolution import CHAINS, Change
from tests.helpers import Project, execute, failed_line, insert_users

Rows = dict[str, list[dict[str, Any]]]
APP_INSERTS = {"users": "INSERT INTO users (username, email) VALUES ('app{n}', 'app{n}@example.com')"}


def connected(url: URL) -> sa.Engine:
    """The test's own client of one deployment, kept for the whole chain.

    Its one connection is opened once and reused: a new connection for each
    look costs a PostgreSQL backend's start and cold catalog caches, over
    four hundred times a chain. Between looks it sits outside any
    transaction, so it holds no lock a migration could wait for, and it
    prepares no statement (a ``SELECT *`` prepared before a migration would
    fail after it: "cached plan must not change result type").
    """
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_size=1, max_overflow=0, connect_args={"prepare_threshold": None})
    return sa.create_engine(url, pool_size=1, max_overflow=0)


def rows(engine: sa.Engine) -> Rows:
    """Every row of every application table, in a stable order."""
    with engine.connect() as conn:
        names = [n for n in sa.inspect(conn).get_table_names() if not n.startswith("alembic_")]
        return {
            name: sorted(
                (dict(r._mapping) for r in conn.execute(sa.text(f'SELECT * FROM "{name}"'))), key=repr
            )
            for name in names
        }


def assert_kept(
    before: Rows,
    after: Rows,
    skip: tuple[str, ...] = (),
    renamed: dict[str, str] | None = None,
    casts: tuple[str, ...] = (),
) -> None:
    """The values of every column present on both sides are the same (after renames).

    A column in ``casts`` changed type: its values are compared as JSON text
    ('7' and 7, '{"a": 1}' and {"a": 1} are the same value).
    """
    renamed = renamed or {}
    for table, table_rows in before.items():
        target = renamed.get(table, table)
        if target not in after:
            continue
        moved = [{renamed.get(f"{table}.{c}", c): v for c, v in row.items()} for row in table_rows]
        common = set(moved[0] if moved else ()) & set(after[target][0] if after[target] else ())
        common -= {c.split(".")[1] for c in skip if c.startswith(f"{table}.")}
        cast = {c.split(".")[1] for c in casts if c.startswith(f"{table}.")}
        assert _projected(moved, common, cast) == _projected(after[target], common, cast), (
            f"{table}: values changed"
        )
        assert len(moved) == len(after[target]), f"{table}: rows lost or added"


def _projected(table_rows: list[dict[str, Any]], columns: set[str], cast: set[str]) -> list[dict[str, Any]]:
    return sorted(
        ({c: _as_json(row[c]) if c in cast else row[c] for c in columns} for row in table_rows), key=repr
    )


def _as_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, sort_keys=True)


Columns = dict[str, dict[str, tuple[str, bool]]]


def columns(engine: sa.Engine) -> Columns:
    """Each application table's columns: the type as the database names it, and whether it takes NULL."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {
            name: {
                c["name"]: (str(c["type"].compile(dialect=conn.dialect)), bool(c["nullable"]))
                for c in inspector.get_columns(name)
            }
            for name in inspector.get_table_names()
            if not name.startswith("alembic_")
        }


def upgrade(config: Config) -> None:
    command.upgrade(Run(needs_models=False).start_with(config), "head")  # as make upgrade runs it


def downgrade(config: Config, steps: int = 1) -> None:
    command.downgrade(Run(creates_database=False).start_with(config), f"-{steps}")


def refused(engine: sa.Engine, statement: str) -> bool:
    """Whether the database refuses ``statement`` (a constraint or a unique index holds); nothing is kept."""
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql(statement)
        except sa.exc.IntegrityError:
            return True
        finally:
            conn.rollback()
    return False


def written(engine: sa.Engine, *statements: str) -> None:
    """Run raw SQL in one committed transaction, as the application would."""
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


class Deployment:
    """The copy of the project a user evolves, and the two databases it is deployed to."""

    def __init__(self, project: Project, urls: dict[str, URL]) -> None:
        self.project, self.urls, self.writes = project, urls, 0
        self.engines = {backend: connected(url) for backend, url in urls.items()}
        self.inserts = dict(APP_INSERTS)
        self.refusals: list[str] = []  # what earlier changes made the database refuse

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()

    @property
    def root(self) -> str:
        return str(self.project.root)

    def edit_models(self, change: Change) -> None:
        for relative, old, new in change.edits:
            path = self.project.root / relative
            if not old:
                path.write_text(new)
                continue
            text = path.read_text()
            assert old in text, f"{change.message}: {old!r} not in {relative}"
            path.write_text(text.replace(old, new, 1))

    def autogenerate(self, change: Change) -> str:
        message = change.message
        answers = change.answers
        assert (
            workers.call(self.root, self.urls["sqlite"], lambda c: migration.migration(c, message, answers))
            == 0
        )
        written = list(self.project.versions.glob(f"*_{message.replace(' ', '_')}.py"))
        assert len(written) == 1, f"{message}: expected one migration, make migration wrote {len(written)}"
        (path,) = written
        text = path.read_text()
        joined = re.sub(r'"\s+"', "", text)  # long SQL is split into adjacent string literals
        for fragment in change.expect:
            assert fragment in joined, f"{change.message}: {fragment!r} not in the generated file:\n{text}"
        at = 0
        for fragment in change.in_order:
            found = joined.find(fragment, at)
            assert found >= 0, f"{change.message}: {fragment!r} not after {at} in the generated file:\n{text}"
            at = found + len(fragment)
        if change.hand_edit is not None:
            path.write_text(change.hand_edit(text))
        return text

    def deploy(self, change: Change, backend: str) -> None:
        url, engine = self.urls[backend], self.engines[backend]
        context = f"{change.message} on {backend}"
        before, schema = rows(engine), columns(engine)
        assert workers.call(self.root, url, upgrade) == 0, f"{context}: upgrade failed"
        self.assert_refusals(engine, context, *change.refuses)
        after = rows(engine)
        renamed = change.renames
        assert_kept(before, after, skip=change.fills, renamed=renamed, casts=change.casts)
        assert workers.call(self.root, url, check.check) == 0, f"{context}: the models differ after upgrade"
        steps = change.round_trip
        assert workers.call(self.root, url, lambda c: downgrade(c, steps)) == 0, (
            f"{context}: downgrade failed"
        )
        if steps == 1:
            back = {new: old for old, new in renamed.items()}
            assert_kept(after, rows(engine), renamed=back, casts=change.casts)
            assert columns(engine) == schema, f"{context}: the downgrade left other column types"
            self.assert_refusals(engine, f"{context}, downgraded")
        assert workers.call(self.root, url, upgrade) == 0, f"{context}: upgrade after downgrade failed"
        self.assert_refusals(engine, f"{context}, upgraded again", *change.refuses)
        assert rows(engine) == after, f"{context}: a round trip changed rows"
        written(engine, *change.seed)

    def assert_refusals(self, engine: sa.Engine, context: str, *more: str) -> None:
        """What earlier changes (and ``more``) made the database refuse, it still refuses."""
        for statement in (*self.refusals, *more):
            assert refused(engine, statement), f"{context}: accepted {statement!r}"

    def application_writes(self, change: Change) -> None:
        """The application keeps inserting rows with only the columns it must give."""
        self.inserts.update(change.inserts)
        self.refusals += change.refuses
        self.writes += 1
        for engine in self.engines.values():
            written(engine, *(sql.format(n=self.writes) for sql in self.inserts.values() if sql))

    def lint_style(self) -> None:
        """The generated files pass the ruff part of ``make lint`` as written."""
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", str(self.project.versions)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout

    def refresh_snapshot(self) -> None:
        """``make schema``'s PostgreSQL file, dumped from the deployment just migrated."""
        config = Config(str(self.project.root / "alembic.ini"))
        script = ScriptDirectory.from_config(config)
        dump = snapshot.postgresql_schema(script, self.urls["postgresql"])
        (self.project.root / "schema" / "postgresql.sql").write_text(dump)

    def check_sqlite_with_snapshot(self, change: Change) -> None:
        """With PostgreSQL's facts current, SQLite shows no drift, not even what it cannot hold (comments)."""
        code = workers.call(self.root, self.urls["sqlite"], check.check)
        assert code == 0, f"{change.message}: make check on SQLite, with schema/ current, found drift"


# About a second per change: the longest tests of the suite.
@pytest.mark.parametrize(
    "chain",
    [pytest.param(name, marks=pytest.mark.slow(seconds=len(CHAINS[name]))) for name in sorted(CHAINS)],
)
def test_every_model_change_migrates_on_both_backends(chain: str, tmp_path: Path, pg_admin_url: URL) -> None:
    project = Project.copy_to(tmp_path / "project")
    with pgserver.fresh_database(pg_admin_url) as pg_url:
        deployment = Deployment(
            project, {"sqlite": URL.create("sqlite", database=str(tmp_path / "app.db")), "postgresql": pg_url}
        )
        try:
            for url in deployment.urls.values():
                project.migrate(url)
                insert_users(url, 6)
            for change in CHAINS[chain]:
                deployment.edit_models(change)
                deployment.autogenerate(change)
                for backend in deployment.urls:
                    deployment.deploy(change, backend)
                deployment.refresh_snapshot()
                deployment.check_sqlite_with_snapshot(change)
                deployment.application_writes(change)
        finally:
            deployment.close()  # before the database is dropped
        deployment.lint_style()


def test_check_on_postgresql_catches_a_sequence_narrower_than_its_key(
    project_copy: Project, pg_admin_url: URL
) -> None:
    """What Alembic's alter_column alone leaves behind: a bigint key drawing from an integer sequence."""
    model = project_copy.root / "models" / "user.py"
    model.write_text(
        model.read_text()
        .replace("from sqlalchemy import String", "from sqlalchemy import BigInteger, String")
        .replace("mapped_column(primary_key=True", "mapped_column(BigInteger, primary_key=True")
    )
    with pgserver.fresh_database(pg_admin_url) as url:
        project_copy.migrate(url)
        execute(url, "ALTER TABLE users ALTER COLUMN id TYPE bigint")
        line = failed_line(project_copy.cli("check", url=url))
        assert "modify_sequence_type', 'users', 'id', 'integer', 'bigint'" in line
        execute(url, "ALTER SEQUENCE users_id_seq AS bigint")
        assert project_copy.cli("check", url=url).returncode == 0

"""``make squash``: one migration replaces the oldest twenty, and every database still reaches head alike.

The history is the 30 revisions of ``tests/squash_history`` (the evolution
corpus: enums, renames, composite names, key widths, reference rows and a
data step), squashed at revision 20 once per module. Databases at 0, 7, 20 and
25 are built by the old files, as they stood before the squash landed (SQLite
files copied, PostgreSQL databases cloned from a template), then upgraded by
the squashed checkout; a new one runs the squash. Each must match a database
the unsquashed checkout took to head: schema, rows (the reference rows the data
steps wrote), ``make check`` and ``make verify``. Runs are forked
(``tests.workers``); the refusals are one CLI call each.
"""

from __future__ import annotations

import shutil
import subprocess
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionMap
from alembic.util import CommandError
from alembic_linear_migrations import head as head_file
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.commands import check, verify
from dbtools.runtime import replay, snapshot, squashes
from tests import workers
from tests.helpers import Project, engine_for, failed_line, query

HISTORY = Path(__file__).resolve().parent / "squash_history"
REVISIONS = [path.name.split("-")[1].split("_")[0] for path in sorted((HISTORY / "versions").glob("*.py"))]
UPTO = REVISIONS[20]
STARTS = (0, 7, 20, 25)
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def install_history(project: Project) -> None:
    for path in project.versions.glob("*.py"):
        path.unlink()
    for path in (HISTORY / "versions").glob("*.py"):
        shutil.copy(path, project.versions / path.name)
    shutil.rmtree(project.root / "models")
    shutil.copytree(HISTORY / "models", project.root / "models")
    shutil.copy(HISTORY / "postgresql.sql", project.root / "schema" / "postgresql.sql")
    head_file.write(project.head_file, REVISIONS[-1])


def commit(project: Project, message: str) -> None:
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", message]):
        subprocess.run([*GIT, *argv], cwd=project.root, check=True, capture_output=True)


@dataclass
class Histories:
    old: Project  # the checkout before the squash
    squashed: Project  # after make squash upto=<revision 20>, committed
    wrote: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: URL) -> Histories:
    root = tmp_path_factory.mktemp("squash")
    old = Project.copy_to(root / "old")
    install_history(old)
    commit(old, "thirty migrations")
    squashed = Project(root / "squashed")
    shutil.copytree(old.root, squashed.root, symlinks=True)
    wrote = squashed.cli("squash", f"--upto={UPTO}", "--allow-data-loss=1")
    assert wrote.returncode == 0, wrote.stderr
    commit(squashed, "squash")
    return Histories(old, squashed, wrote)


def schema(url: URL) -> str:
    if url.get_backend_name() == "postgresql":
        return snapshot.pg_dump(url, "--schema-only")
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master "
                "WHERE name NOT LIKE 'alembic_%' ORDER BY type, name"
            ).all()
    finally:
        engine.dispose()
    # Laid out as make schema does: a batch rebuild orders a table's constraints as a Python set does.
    return "\n".join(f"{kind} {name}: {snapshot.one_item_per_line(sql or '')}" for kind, name, sql in found)


def rows(url: URL) -> dict[str, list[Any]]:
    """Every application row; ``created_at`` left out, as it says when a row was written, not what."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            names = [name for name in sa.inspect(conn).get_table_names() if not name.startswith("alembic_")]
            return {
                name: sorted(
                    (
                        {k: v for k, v in row._mapping.items() if k != "created_at"}
                        for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))
                    ),
                    key=repr,
                )
                for name in sorted(names)
            }
    finally:
        engine.dispose()


class Databases:
    """Databases of one backend: a template the old files migrate, cloned at each start (SQLite: copied)."""

    def __init__(self, backend: str, folder: Path, admin: URL) -> None:
        self.backend, self.folder, self.admin = backend, folder, admin
        self.clones: list[str] = []

    def clone(self, source: URL, name: str) -> URL:
        if self.backend == "sqlite":
            target = self.folder / f"{name}.db"
            if Path(str(source.database)).exists():
                shutil.copy(str(source.database), target)
            return URL.create("sqlite", database=str(target))
        engine = sa.create_engine(self.admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        clone = f"{source.database}_{name}"
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE {clone} TEMPLATE {source.database} OWNER {source.username}"
            )
        engine.dispose()
        self.clones.append(clone)
        return source.set(database=clone)

    def drop_clones(self) -> None:
        engine = sa.create_engine(self.admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            for clone in self.clones:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {clone} WITH (FORCE)")
        engine.dispose()


@pytest.fixture
def template(backend: str, tmp_path: Path, pg_admin_url: URL) -> Iterator[tuple[Databases, URL]]:
    databases = Databases(backend, tmp_path, pg_admin_url)
    if backend == "sqlite":
        yield databases, URL.create("sqlite", database=str(tmp_path / "template.db"))
        return
    with pgserver.fresh_database(pg_admin_url) as url:
        try:
            yield databases, url
        finally:
            databases.drop_clones()


@pytest.mark.slow(seconds=6)
def test_every_database_reaches_the_same_head(
    histories: Histories, template: tuple[Databases, URL], backend: str
) -> None:
    databases, source = template
    old, squashed = histories.old, histories.squashed
    fresh = databases.clone(source, "fresh")  # before the old files touch it
    tenant = databases.clone(source, "tenant") if backend == "postgresql" else None
    started = {}
    for start in STARTS:  # the databases the old files left at each revision
        old.migrate(source, REVISIONS[start])
        started[start] = databases.clone(source, f"at{start}")
    still_at_7 = databases.clone(started[7], "stillat7")  # for after the prune
    old.migrate(source)  # the unsquashed run: the reference
    expected = (schema(source), rows(source), workers.call(str(old.root), source, check.check))
    assert expected[1]["users"][0]["username"] == "system"  # the reference row revision 1 inserted
    assert expected[1]["posts"][0]["title"] == "welcome"  # and revision 16's
    assert expected[2] == 0

    upgraded = squashed.cli("upgrade", url=fresh)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"Running upgrade  -> {UPTO}, Squash of the 21 migrations" in upgraded.stderr
    assert f"Running upgrade {UPTO} -> {REVISIONS[21]}" in upgraded.stderr
    for url in started.values():
        squashed.migrate(url)
    for name, url in [("fresh", fresh), *((f"at {start}", url) for start, url in started.items())]:
        found = (schema(url), rows(url), workers.call(str(squashed.root), url, check.check))
        assert found == expected, f"the database {name} differs from the unsquashed run"
        assert workers.call(str(squashed.root), url, verify.verify) == 0, f"make verify on {name}"
    assert "Nothing to repair" in squashed.cli("repair", url=fresh).stdout
    if tenant is not None:  # the squash builds in a tenant's schema (MIGRATION_SCHEMA), not in public
        in_tenant = {"MIGRATION_SCHEMA": "tenant_a"}
        assert squashed.cli("upgrade", url=tenant, env=in_tenant).returncode == 0
        assert workers.call(str(squashed.root), tenant, check.check, **in_tenant) == 0
        assert query(tenant, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
        assert query(tenant, "SELECT count(*) FROM tenant_a.posts") == [(1,)]  # the welcome post

    # Below the squash: refused on the database it built, in one line, before any step runs.
    line = failed_line(squashed.cli("downgrade", "base", url=fresh))
    assert f"cannot step below {UPTO}" in line
    assert schema(fresh) == expected[0]
    if backend == "sqlite":  # the next no-op make upgrade is answered without Alembic
        again = squashed.cli("upgrade", url=fresh)
        assert "[dbtools.runtime.fastpath]" in again.stderr, again.stderr

    # Pruned: the old files go; a database still at revision 7 is told what it needs.
    pruned = Project(databases.folder / "pruned")
    shutil.copytree(squashed.root, pruned.root, symlinks=True)
    assert pruned.cli("squash", "--prune=1").returncode == 0
    assert len(list(pruned.versions.glob("*.py"))) == 10
    commit(pruned, "prune")  # the second release
    line = failed_line(pruned.cli("squash", f"--upto={REVISIONS[25]}", "--allow-data-loss=1"))
    assert f"would squash {UPTO}, itself a squash: a squash of a squash is not supported" in line
    line = failed_line(pruned.cli("upgrade", url=still_at_7))
    assert f"the database is at {REVISIONS[7]}, inside the 21 migrations squashed into {UPTO}" in line
    assert "Can't locate revision" not in line
    # A database that came through the old files: verified, shown and answered as before the prune.
    came_through_old_files = started[25]
    assert workers.call(str(pruned.root), came_through_old_files, verify.verify) == 0
    shown = pruned.cli("status", url=came_through_old_files)
    assert "0 pending" in shown.stdout
    assert "checksums: all match" in shown.stdout
    assert f"[X] {UPTO}  Squash of the 21 migrations" in shown.stdout
    if backend == "sqlite":
        assert (
            pruned.cli("upgrade", url=came_through_old_files).returncode == 0
        )  # records the fast path's cache
        again = pruned.cli("upgrade", url=came_through_old_files)
        assert "[dbtools.runtime.fastpath]" in again.stderr, again.stderr


def test_bad_input_is_refused_with_nothing_written(histories: Histories) -> None:
    old, squashed = histories.old, histories.squashed
    wrote = histories.wrote.stdout
    assert "Proved:" in wrote
    assert "Supported:" in wrote  # the guest role's ADD VALUE among them: an autocommit_block()
    assert "autocommit_block" in wrote
    assert "Reference rows carried over from" in wrote
    before = sorted(path.name for path in old.versions.glob("*.py*"))
    refusals = {
        "is not a revision of this history": ["--upto=feedface1234"],
        "upto=base is before every migration": ["--upto=base"],
        "leave out data steps that change existing rows": [f"--upto={UPTO}"],
    }
    for expected, argv in refusals.items():
        assert expected in failed_line(old.cli("squash", *argv))
    assert "there is no squash to prune" in failed_line(old.cli("squash", "--prune=1"))
    assert "give it alone, without upto=" in failed_line(old.cli("squash", "--prune=1", f"--upto={UPTO}"))
    # Through make, as typed: upto= reaches the command as one argument.
    assert "upto=base is before every migration" in failed_line(old.make("squash", "upto=base"))
    assert "a squash of a squash is not supported" in failed_line(squashed.cli("squash", f"--upto={UPTO}"))
    edited = next(squashed.versions.glob("r07-*.py"))
    edited.write_text(edited.read_text() + "# edited after the squash\n")
    commit(squashed, "an edit")
    try:
        line = failed_line(squashed.cli("squash", "--prune=1"))
        assert f"{REVISIONS[7]} changed since the squash was written and proved" in line
    finally:
        subprocess.run([*GIT, "reset", "-q", "--hard", "HEAD~1"], cwd=squashed.root, check=True)
    branch = old.add_migration("pass", down_revision=REVISIONS[5], updates_head_file=False)
    (old.versions / "9999_merge.py").write_text(
        f'"""merge"""\nrevision = "feed00000001"\ndown_revision = ({REVISIONS[-1]!r}, {branch!r})\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )
    commit(old, "a branch, merged")
    try:
        line = failed_line(old.cli("squash", f"--upto={REVISIONS[9]}", "--allow-data-loss=1"))
        assert f"is inside a branch: the history splits after {REVISIONS[5]}" in line
        line = failed_line(old.cli("squash", "--upto=feed00000001", "--allow-data-loss=1"))
        assert "would squash the merge revision feed00000001" in line
    finally:
        subprocess.run([*GIT, "reset", "-q", "--hard", "HEAD~1"], cwd=old.root, check=True)
    (old.versions / "stray.py").write_text("")
    (old.versions / "stray.cpython-311.pyc").write_bytes(b"")  # bytecode is no change of the user's
    try:
        assert "migrations/ has uncommitted changes (migrations/versions/stray.py);" in failed_line(
            old.cli("squash", f"--upto={UPTO}", "--allow-data-loss=1")
        )
    finally:
        (old.versions / "stray.py").unlink()
        (old.versions / "stray.cpython-311.pyc").unlink()
    assert sorted(path.name for path in old.versions.glob("*.py*")) == before


def test_the_postgresql_side_leaves_names_to_the_search_path_and_text_alone() -> None:
    """pg_dump qualifies names with public, in literals too; a tenant's run builds in its own schema."""
    dump = replay.Dump(
        (),
        "CREATE TABLE public.notes (id integer DEFAULT nextval('public.notes_id_seq'::regclass));\n"
        "INSERT INTO public.notes (id, body) VALUES (1, 'see public.notes');",
    )
    assert dump.postgresql_script == (
        "CREATE TABLE notes (id integer DEFAULT nextval('notes_id_seq'::regclass));\n"
        "INSERT INTO notes (id, body) VALUES (1, 'see public.notes');"
    )


def test_a_squash_that_builds_something_else_is_described() -> None:
    """What the refusal says when the two scratch databases differ: the statements on each side."""
    old = replay.Dump(("CREATE TABLE t (a TEXT DEFAULT 'x')",), None)
    new = replay.Dump(("CREATE TABLE t (a TEXT DEFAULT 'y')",), None)
    assert replay.differences(old, new) == [
        "SQLite: -CREATE TABLE t (a TEXT DEFAULT 'x'); +CREATE TABLE t (a TEXT DEFAULT 'y')"
    ]
    assert replay.differences(old, old) == []


def test_a_downgrade_to_a_revision_the_squash_replaced_is_refused_by_name(tmp_path: Path) -> None:
    """Such a revision is no revision of the squashed history: the squash's refusal, not Alembic's
    "Can't locate revision" (``make downgrade rev=<an old revision>`` on a database the squash built)."""
    module = types.ModuleType("squash")
    module.down_revision = None  # type: ignore[attr-defined]
    squash = squashes.Squash(
        Script(module, "bbbbbbbbbbbb", str(tmp_path / "squash.py.squash")),
        {"aaaaaaaaaaaa": "checksum a", "bbbbbbbbbbbb": "checksum b"},
    )
    script = ScriptDirectory(str(tmp_path))
    script.revision_map = RevisionMap(lambda: [squash.script])  # the squashed history: the squash alone
    for destination in ("aaaaaaaaaaaa", "aaaa"):  # a whole id, or a prefix of one, as Alembic takes them
        with pytest.raises(CommandError, match=f"rev={destination} is below bbbbbbbbbbbb, the squash of 2"):
            squashes.refuse_downgrade(script, squash, ("bbbbbbbbbbbb",), destination)
    squashes.refuse_downgrade(script, squash, ("bbbbbbbbbbbb",), "bbbbbbbbbbbb")  # the squash itself: allowed


def test_a_database_inside_a_pruned_range_is_told_which_revisions_it_needs(tmp_path: Path) -> None:
    """One revision left is named alone ("(b)", not "(b to b)"); several as a range."""
    module = types.ModuleType("squash")
    module.down_revision = None  # type: ignore[attr-defined]
    module.replaces = {"aaaaaaaaaaaa": "a", "cccccccccccc": "c", "bbbbbbbbbbbb": "b"}  # type: ignore[attr-defined]
    script = ScriptDirectory(str(tmp_path))
    pruned = Script(module, "bbbbbbbbbbbb", str(tmp_path / "squash.py"))
    script.revision_map = RevisionMap(lambda: [pruned])  # the history after the prune: the squash alone
    with pytest.raises(CommandError, match=r"it still needs 1 of them \(bbbbbbbbbbbb\)\. Upgrade"):
        squashes.refuse_pruned(script, ["cccccccccccc"])
    with pytest.raises(CommandError, match=r"needs 2 of them \(cccccccccccc to bbbbbbbbbbbb\)\. Upgrade"):
        squashes.refuse_pruned(script, ["aaaaaaaaaaaa"])

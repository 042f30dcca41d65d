"""No database silently skips a migration: a branch re-pointed after a database applied it.

Bob's database applied his migration B on parent P; then B is re-pointed onto
Alice's A (P -> A -> B), so the database, at B, never ran A. Every command
says so instead of "nothing to do"; `make upgrade out_of_order=1` runs A when
A and B touch different objects, and refuses when they touch the same one.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import URL

from dbtools.runtime import outoforder
from dbtools.runtime.digest import file_checksum, read_script
from tests.helpers import (
    Project,
    current_revision,
    dump,
    engine_for,
    execute,
    failed_line,
    recorded_checksums,
)

ADD = 'op.add_column("users", sa.Column("{0}", sa.String(32)))'
DROP = 'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("{0}")'


def re_pointed_after_applying(
    project: Project, url: URL, alice_column: str, bob_column: str
) -> tuple[str, str]:
    """Bob's database applies B on P, then B is re-pointed onto Alice's A: return (A, B)."""
    parent = project.heads()[0]
    bob = project.add_migration(ADD.format(bob_column), DROP.format(bob_column))
    project.migrate(url)
    alice = project.add_migration(ADD.format(alice_column), DROP.format(alice_column), down_revision=parent)
    (path,) = project.versions.glob(f"*{bob}*.py")
    path.write_text(path.read_text().replace(f"down_revision = {parent!r}", f"down_revision = {alice!r}"))
    model = project.root / "models" / "user.py"  # the models have both columns: make check is clean
    added = "".join(
        f"    {name}: Mapped[str | None] = mapped_column(String(32))\n" for name in {alice_column, bob_column}
    )
    model.write_text(model.read_text().replace("\n    def __repr__", f"{added}\n    def __repr__"))
    return alice, bob


def columns(url: URL) -> set[str]:
    engine = engine_for(url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns("users")}
    finally:
        engine.dispose()


def test_a_skipped_migration_is_refused_shown_and_then_applied_out_of_order(
    project_copy: Project, database_url: URL
) -> None:
    alice, bob = re_pointed_after_applying(project_copy, database_url, "phone", "nickname")
    before = dump(database_url)

    line = failed_line(project_copy.cli("upgrade", url=database_url))
    assert f"migration(s) {alice} never ran on this database, though {bob}" in line
    assert "`make upgrade out_of_order=1`" in line
    assert "`make restore`" in line
    for command in ("check", "verify", "downgrade", "repair"):
        assert f"{alice} never ran on this database" in failed_line(
            project_copy.cli(command, url=database_url)
        )
    status = project_copy.cli("status", url=database_url)
    assert status.returncode == 0, status.stderr
    (shown,) = [line for line in status.stdout.splitlines() if alice in line and "SKIPPED" not in line]
    assert shown.startswith(f"[!] {alice}  test migration")
    assert "skipped: never applied here" in shown
    assert "1 SKIPPED" in status.stdout
    assert " 0 pending" in status.stdout
    assert dump(database_url) == before

    after = project_copy.add_migration("pass")  # pending: the run continues to head
    upgraded = project_copy.make("upgrade", "out_of_order=1", url=database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"Running upgrade {alice} out of order" in upgraded.stderr
    assert f"Running upgrade {bob} -> {after}" in upgraded.stderr
    assert current_revision(database_url) == after
    if database_url.database and database_url.get_backend_name() == "sqlite":  # backed up first
        assert list((Path(database_url.database).parent / "backups").glob(f"app.db-{bob}-*"))
    assert {"phone", "nickname"} <= columns(database_url)
    (alice_path,) = project_copy.versions.glob(f"*{alice}*.py")
    assert recorded_checksums(database_url)[alice] == file_checksum(alice_path)
    for command in ("check", "verify"):
        result = project_copy.cli(command, url=database_url)
        assert result.returncode == 0, result.stderr
    again = project_copy.cli("upgrade", url=database_url)
    assert again.returncode == 0, again.stderr
    assert "out of order" not in again.stderr


def test_out_of_order_refuses_when_both_touch_the_same_column(
    project_copy: Project, database_url: URL
) -> None:
    alice, bob = re_pointed_after_applying(project_copy, database_url, "phone", "phone")
    before = dump(database_url)

    assert "out_of_order='yes': give 1" in failed_line(
        project_copy.cli("upgrade", "--out-of-order=yes", url=database_url)
    )
    line = failed_line(project_copy.cli("upgrade", "--out-of-order=1", url=database_url))

    assert f"cannot apply {alice} out of order: it and {bob}, which already ran here," in line
    assert "both touch column users.phone" in line
    assert dump(database_url) == before


def test_the_fast_path_hands_a_skip_over_to_the_full_run(project_copy: Project) -> None:
    url = URL.create("sqlite", database=str(project_copy.root / "app.db"))
    alice, _ = re_pointed_after_applying(project_copy, url, "phone", "nickname")
    # A full run that reached head with these very files wrote the fast path's record...
    (alice_path,) = project_copy.versions.glob(f"*{alice}*.py")
    execute(url, f"INSERT INTO alembic_checksums VALUES ('{alice}', '{file_checksum(alice_path)}', '')")
    assert project_copy.cli("upgrade").returncode == 0
    assert "[dbtools.runtime.fastpath]" in project_copy.cli("upgrade").stderr  # the record holds
    # ...and then the database is found to have skipped Alice's migration.
    execute(url, f"DELETE FROM alembic_checksums WHERE revision = '{alice}'")

    result = project_copy.make("upgrade")

    assert "[dbtools.runtime.fastpath]" not in result.stderr
    assert f"migration(s) {alice} never ran on this database" in failed_line(result)
    assert read_script(alice_path)  # the file is untouched


def migration(upgrade: Any) -> Any:
    return SimpleNamespace(revision="r", module=SimpleNamespace(upgrade=upgrade))


def test_what_a_migration_touches_is_read_from_its_operations_batch_ones_too() -> None:
    def upgrade() -> None:
        with op.batch_alter_table("users") as batch_op:
            batch_op.alter_column("email", new_column_name="mail")
            batch_op.create_index("ix_users_mail", ["mail"])
        op.add_column("users", sa.Column("mood", sa.Enum("calm", "busy", name="mood")))

    assert outoforder.touched_by(migration(upgrade), "sqlite") == {
        ("column", "users", "email"),
        ("column", "users", "mail"),
        ("index", "ix_users_mail"),
        ("column", "users", "mood"),
        ("type", "mood"),
    }
    with pytest.raises(outoforder.Unreadable, match=r"runs raw SQL \(op.execute\)"):
        outoforder.touched_by(
            migration(lambda: op.execute("UPDATE users SET email = lower(email)")), "sqlite"
        )

    def commits() -> None:
        with op.get_context().autocommit_block():
            op.create_index("ix_users_mail", "users", ["email"], postgresql_concurrently=True)

    assert outoforder.touched_by(migration(commits), "postgresql") == {("index", "ix_users_mail")}
    with pytest.raises(outoforder.Unreadable, match="commits midway"):
        outoforder.touched_by(migration(commits), "postgresql", runs_late=True)


def test_repair_re_records_an_edit_but_never_records_a_skipped_migration(
    project_copy: Project, tmp_path: Path
) -> None:
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    alice, bob = re_pointed_after_applying(project_copy, url, "phone", "nickname")
    (path,) = project_copy.versions.glob(f"*{bob}*.py")
    path.write_text(path.read_text() + "# reviewed\n")

    repaired = project_copy.cli("repair", url=url)

    assert repaired.returncode == 0, repaired.stderr
    assert f"Re-recorded {bob}" in repaired.stdout
    assert alice not in recorded_checksums(url)
    assert f"migration(s) {alice} never ran on this database" in failed_line(
        project_copy.cli("upgrade", url=url)
    )

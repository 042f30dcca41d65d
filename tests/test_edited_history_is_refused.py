"""Checksums of applied migrations: an edited, deleted or unrecorded one is refused untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

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


def sha256(project: Project, revision: str) -> str:
    """What a run records: the file's sha256 with its parent left out (dbtools.runtime.digest)."""
    (path,) = project.versions.glob(f"*{revision}*.py")
    return file_checksum(path)


def script_of(project: Project, revision: str) -> str:
    (path,) = project.versions.glob(f"*{revision}*.py")
    return str(path)


def test_each_applied_revision_is_recorded_and_a_downgrade_removes_its_record(
    project_copy: Project, nickname_history: list[str], database_url: URL
) -> None:
    first = nickname_history[0]
    project_copy.migrate(database_url)
    assert recorded_checksums(database_url) == {rev: sha256(project_copy, rev) for rev in nickname_history}

    assert project_copy.cli("downgrade", url=database_url).returncode == 0
    assert recorded_checksums(database_url) == {first: sha256(project_copy, first)}

    # At base nothing is applied, so the table itself goes: only alembic_version is left.
    assert project_copy.cli("downgrade", "base", url=database_url).returncode == 0
    assert set(dump(database_url)) - {"sqlite_master"} == {"alembic_version"}


@pytest.mark.parametrize("command", ["upgrade", "downgrade", "verify"])
def test_an_edited_applied_migration_is_refused_and_nothing_changes(
    project_copy: Project, nickname_history: list[str], database_url: URL, command: str
) -> None:
    first, _ = nickname_history
    project_copy.migrate(database_url, first)
    with open(script_of(project_copy, first), "a") as script:
        script.write("# edited after it was applied\n")
    before = dump(database_url)

    result = project_copy.cli(command, url=database_url)

    line = failed_line(result)
    assert f"applied migration {first} was edited after it was applied" in line
    assert "make repair" in line
    assert dump(database_url) == before


def test_a_deleted_applied_migration_is_refused_by_name(
    project_copy: Project, nickname_history: list[str], database_url: URL
) -> None:
    first, second = nickname_history
    project_copy.migrate(database_url)
    before = dump(database_url)

    # The file of an applied revision in the middle of the chain.
    (path,) = project_copy.versions.glob(f"*{first}*.py")
    path.unlink()
    for command in ("upgrade", "downgrade", "verify"):
        line = failed_line(project_copy.cli(command, url=database_url))
        assert first in line, line
        assert "missing migration file" in line
    assert dump(database_url) == before

    # The file of the revision the database is at.
    (path,) = project_copy.versions.glob(f"*{second}*.py")
    path.rename(project_copy.root / "moved-away.py")
    line = failed_line(project_copy.cli("downgrade", url=database_url))
    assert second in line
    assert dump(database_url) == before


def test_an_unrecorded_revision_is_refused_until_make_repair_records_it(
    project_copy: Project, nickname_history: list[str], database_url: URL
) -> None:
    first, second = nickname_history
    project_copy.migrate(database_url, first)
    # As left by a run from before checksums existed, or by a hand-made stamp.
    execute(database_url, "DELETE FROM alembic_checksums")

    line = failed_line(project_copy.cli("upgrade", url=database_url))
    assert f"applied migration {first} has no recorded checksum" in line
    assert "make repair" in line
    assert current_revision(database_url) == first

    repaired = project_copy.cli("repair", url=database_url)
    assert repaired.returncode == 0, repaired.stderr
    assert f"Recorded {first}" in repaired.stdout
    assert project_copy.cli("verify", url=database_url).returncode == 0
    project_copy.migrate(database_url)
    assert current_revision(database_url) == second


def test_make_repair_shows_the_edit_then_accepts_it(
    project_copy: Project, nickname_history: list[str], database_url: URL
) -> None:
    first, second = nickname_history
    project_copy.migrate(database_url, first)
    with open(script_of(project_copy, first), "a") as script:
        script.write("# reviewed: a comment only\n")

    repaired = project_copy.cli("repair", url=database_url)

    assert repaired.returncode == 0, repaired.stderr
    assert f"--- {first} as applied" in repaired.stdout
    assert "+# reviewed: a comment only" in repaired.stdout
    assert f"Re-recorded {first}" in repaired.stdout
    assert recorded_checksums(database_url)[first] == sha256(project_copy, first)
    verified = project_copy.cli("verify", url=database_url)
    assert verified.returncode == 0, verified.stderr
    assert "OK: all 1 applied migration(s)" in verified.stdout
    project_copy.migrate(database_url)
    assert current_revision(database_url) == second
    again = project_copy.cli("repair", url=database_url)
    assert "Nothing to repair" in again.stdout


def test_make_verify_without_a_database_creates_none(project_copy: Project) -> None:
    result = project_copy.cli("verify")
    assert result.returncode == 0, result.stderr
    assert "nothing to verify" in result.stdout
    assert not (project_copy.root / "app.db").exists()


def test_make_stamp_records_the_checksums_of_what_it_adopts(project: Project, database_url: URL) -> None:
    project.migrate(database_url)
    execute(database_url, "DROP TABLE alembic_checksums", "DROP TABLE alembic_version")

    stamped = project.cli("stamp", url=database_url)

    assert stamped.returncode == 0, stamped.stderr
    head = project.heads()[0]
    assert recorded_checksums(database_url) == {head: sha256(project, head)}
    assert project.cli("verify", url=database_url).returncode == 0


def test_a_missing_file_of_the_applied_head_is_reported_not_a_traceback(
    project_copy: Project, nickname_history: list[str], tmp_path: Path
) -> None:
    database_url = URL.create("sqlite", database=str(tmp_path / "app.db"))  # the files are what matters
    second = nickname_history[1]
    project_copy.migrate(database_url)
    before = dump(database_url)
    (path,) = project_copy.versions.glob(f"*{second}*.py")
    path.rename(project_copy.root / "moved-away.py")  # e.g. an older branch checked out

    for command in ("verify", "repair"):
        line = failed_line(project_copy.cli(command, url=database_url))
        assert f"applied migration {second} has no file in migrations/versions" in line
    status = project_copy.cli("status", url=database_url)

    assert status.returncode == 0, status.stderr
    assert f"[X] {second}  (no such file)  FILE MISSING  <- current" in status.stdout
    assert f"[X] {nickname_history[0]}" in status.stdout  # what ran before it is still shown as applied
    assert "2 applied, 0 pending" in status.stdout
    assert dump(database_url) == before


@pytest.mark.parametrize("shape", ["duplicate id", "self-loop", "cycle"])
def test_a_broken_chain_of_files_is_named_in_one_line(
    project_copy: Project, tmp_path: Path, shape: str
) -> None:
    database_url = URL.create("sqlite", database=str(tmp_path / "app.db"))  # the files are what matters
    head = project_copy.heads()[0]
    project_copy.migrate(database_url)
    before = dump(database_url)
    added = project_copy.add_migration("pass")
    (path,) = project_copy.versions.glob(f"*{added}*.py")
    if shape == "duplicate id":
        path.with_name("9999_copy_of_it.py").write_text(path.read_text())
        files = ", ".join(sorted([path.name, "9999_copy_of_it.py"]))
        expected = f"revision {added} is defined by 2 files ({files})"
    elif shape == "self-loop":
        path.write_text(path.read_text().replace(f"down_revision = {head!r}", f"down_revision = {added!r}"))
        expected = f"Self-loop is detected in revisions ({added})"
    else:
        other = project_copy.add_migration("pass", down_revision=added)
        path.write_text(path.read_text().replace(f"down_revision = {head!r}", f"down_revision = {other!r}"))
        expected = "Cycle is detected in revisions"

    # One check serves every command; each command is shown reaching it on one shape.
    for command in ("upgrade", "status", "verify") if shape == "cycle" else ("upgrade",):
        line = failed_line(project_copy.cli(command, url=database_url))
        assert "the migration history is broken" in line
        assert expected in line
    assert dump(database_url) == before


def record(url: URL, revision: str, source: str, checksum: str) -> None:
    """Write a checksum record by hand, as another kind of run would have left it."""
    row = {"revision": revision, "checksum": checksum, "source": source}
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM alembic_checksums WHERE revision = :revision"), row)
            conn.execute(sa.text("INSERT INTO alembic_checksums VALUES (:revision, :checksum, :source)"), row)
    finally:
        engine.dispose()


def test_a_re_pointed_migration_keeps_its_checksum_but_an_edit_of_its_body_is_refused(
    project_copy: Project, database_url: URL
) -> None:
    head = project_copy.heads()[0]
    bob = project_copy.add_migration('op.add_column("users", sa.Column("nickname", sa.String(32)))')
    (path,) = project_copy.versions.glob(f"*{bob}*.py")
    docstring = f'"""test migration\n\nRevision ID: {bob}\nRevises: {head}\n"""'
    path.write_text(path.read_text().replace('"""test migration"""', docstring))
    project_copy.migrate(database_url)  # Bob's database applied his migration on its old parent
    as_applied = read_script(path)
    # Alice's migration, from the same parent, came first in the merge: Bob's is re-pointed onto it.
    alice = project_copy.add_migration("pass", down_revision=head)
    path.write_text(
        path.read_text()
        .replace(f"down_revision = {head!r}", f"down_revision = {alice!r}")
        .replace(f"Revises: {head}", f"Revises: {alice}")
    )
    # As `make upgrade out_of_order=1` leaves it once Alice's was applied there too.
    (alice_path,) = project_copy.versions.glob(f"*{alice}*.py")
    record(database_url, alice, read_script(alice_path), file_checksum(alice_path))

    verified = project_copy.cli("verify", url=database_url)
    assert verified.returncode == 0, verified.stderr
    assert "OK: all 3 applied migration(s)" in verified.stdout
    after = project_copy.add_migration("pass")
    upgraded = project_copy.cli("upgrade", url=database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert current_revision(database_url) == after
    assert recorded_checksums(database_url)[bob] == sha256(project_copy, bob)

    # A record from before the parent was left out (the whole file's sha256) stays valid too.
    record(database_url, bob, as_applied, hashlib.sha256(as_applied.encode()).hexdigest())
    assert project_copy.cli("verify", url=database_url).returncode == 0

    path.write_text(path.read_text().replace("String(32)", "String(64)"))
    before = dump(database_url)
    for command in ("verify", "upgrade"):
        line = failed_line(project_copy.cli(command, url=database_url))
        assert f"applied migration {bob} was edited after it was applied" in line
    assert dump(database_url) == before

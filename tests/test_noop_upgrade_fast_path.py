"""The no-op `make upgrade` answers without SQLAlchemy, and only when the full run would do nothing.

Each case changes one thing after a full run has recorded the cache; the
fast path must then stay silent and the full run decide, as it always did.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests import workers
from tests.helpers import VENV, Project, as_plain_user, base_env, current_revision, execute, failed_line

FAST = "[dbtools.runtime.fastpath]"


@pytest.fixture
def history(project_copy: Project) -> list[str]:
    """A project at head after a full run: [first, second] applied, the cache written, answering.

    Forked (``Project.cli``): what ``make upgrade`` runs, without a new
    process's imports; the import-free start itself is proven through make below.
    """
    revisions = project_copy.extend_history(
        (
            'op.add_column("users", sa.Column("nick", sa.String(32)))',
            'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("nick")',
        )
    )
    result = project_copy.cli("upgrade")
    assert result.returncode == 0, result.stderr
    assert FAST not in result.stderr
    assert FAST in project_copy.cli("upgrade").stderr  # so a case below silences an answering fast path
    return revisions


def app_db(project: Project) -> URL:
    return URL.create("sqlite", database=str(project.root / "app.db"))


def test_a_no_op_upgrade_answers_without_importing_sqlalchemy(
    project_copy: Project, history: list[str]
) -> None:
    before = (project_copy.root / "app.db").read_bytes()
    argv = [str(VENV / "bin" / "python"), "-X", "importtime", "-m", "dbtools", "upgrade", "head"]

    result = subprocess.run(
        argv, cwd=project_copy.root, env=base_env(), capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert f"is at head {history[1]}; nothing to do." in result.stderr
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line
    ]
    assert not [name for name in imported if name.split(".")[0] in ("sqlalchemy", "alembic", "models")]
    assert (project_copy.root / "app.db").read_bytes() == before
    assert FAST in project_copy.make("upgrade").stderr  # and through make, as deploys run it


def edit_keeping_size_and_time(path: Path) -> None:
    """The one edit a fingerprint of names, sizes and times cannot see: the checksum must."""
    info = path.stat()
    text = path.read_text()
    path.write_text(text.replace("nick", "nock", 1))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def append_comment(path: Path) -> None:
    with path.open("a") as handle:
        handle.write("# edited\n")


def stamp_unknown(project: Project) -> None:
    execute(app_db(project), "UPDATE alembic_version SET version_num = 'feedfacecafe'")


def drop_checksums(project: Project) -> None:
    execute(app_db(project), "DELETE FROM alembic_checksums")


def two_heads(project: Project) -> None:
    head = project.heads()[0]
    project.add_migration("pass", down_revision=head)
    project.add_migration("pass", down_revision=head)


# Each case: what changes, then what the full run says (a FAILED fragment), or None when it succeeds.
CASES: dict[str, tuple[Callable[[Project, list[str]], object], str | None]] = {
    "pending migration": (
        lambda p, h: p.migrate(app_db(p), h[0], action="downgrade"),
        None,
    ),
    "new migration file": (lambda p, h: p.add_migration('op.create_index("ix_n", "users", ["nick"])'), None),
    "edited migration": (
        lambda p, h: append_comment(next(p.versions.glob(f"*{h[1]}*.py"))),
        "was edited after it was applied",
    ),
    "edited, same size and time": (
        lambda p, h: edit_keeping_size_and_time(next(p.versions.glob(f"*{h[1]}*.py"))),
        "was edited after it was applied",
    ),
    "deleted migration": (
        lambda p, h: next(p.versions.glob(f"*{h[1]}*.py")).unlink(),
        "which no file in migrations/versions defines",
    ),
    "database at an unknown revision": (
        lambda p, h: stamp_unknown(p),
        "which no file in migrations/versions defines",
    ),
    "two heads": (lambda p, h: two_heads(p), "several heads"),
    "checksums missing": (lambda p, h: drop_checksums(p), "has no recorded checksum"),
    "garbage database": (
        lambda p, h: (p.root / "app.db").write_bytes(b"not sqlite" * 100),
        "is not a SQLite database",
    ),
    "database missing": (lambda p, h: (p.root / "app.db").unlink(), None),
}


@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_stays_silent_whenever_the_full_run_has_something_to_say(
    project_copy: Project, history: list[str], case: str
) -> None:
    change, refusal = CASES[case]
    change(project_copy, history)

    result = project_copy.cli("upgrade")

    assert FAST not in result.stderr
    if refusal is None:
        assert result.returncode == 0, result.stderr
        assert current_revision(app_db(project_copy)) == project_copy.heads()[0]
    else:
        assert refusal in failed_line(result)


def test_another_database_a_revision_argument_or_a_read_only_file_take_the_full_path(
    project_copy: Project, history: list[str], tmp_path: Path
) -> None:
    other = URL.create("sqlite", database=str(tmp_path / "other.db"))

    elsewhere = project_copy.make("upgrade", url=other)  # another DATABASE_URL: not what was recorded
    by_name = project_copy.make("upgrade", "rev=heads")
    (project_copy.root / "app.db").chmod(0o444)
    try:
        read_only = project_copy.make("upgrade", preexec_fn=as_plain_user)
    finally:
        (project_copy.root / "app.db").chmod(0o644)

    assert elsewhere.returncode == 0
    assert FAST not in elsewhere.stderr
    assert current_revision(other) == history[1]
    assert by_name.returncode == 0
    assert FAST not in by_name.stderr
    assert "is read-only" in failed_line(read_only)


def test_a_writer_holding_the_lock_sends_it_to_the_full_run(
    project_copy: Project, history: list[str]
) -> None:
    quick = {"MIGRATION_LOCK_TIMEOUT": "0.2"}
    assert FAST not in project_copy.make("upgrade", env=quick).stderr  # new settings: recorded anew
    assert FAST in project_copy.make("upgrade", env=quick).stderr
    with closing(sqlite3.connect(project_copy.root / "app.db", isolation_level=None)) as writer:
        writer.execute("BEGIN EXCLUSIVE")  # readers are locked out: the fast path cannot look

        result = project_copy.make("upgrade", env=quick)

    assert FAST not in result.stderr
    assert "MIGRATION_LOCK_TIMEOUT=0.2s" in failed_line(result)


# --- the record itself: whatever is at its path, the fast path answers or hands over ---------


@pytest.fixture
def record(project_copy: Project) -> Path:
    """The real history at head after a full run (forked): the record it wrote, already answering."""
    result = project_copy.cli("upgrade")
    assert result.returncode == 0, result.stderr
    assert FAST not in result.stderr
    (path,) = (project_copy.root / ".dbtools").glob("upgrade-*.json")
    assert FAST in project_copy.cli("upgrade").stderr
    return path


def hands_over(project: Project, **env: str) -> subprocess.CompletedProcess[str]:
    """A `make upgrade` (forked) that must take the full path and succeed, no traceback."""
    result = project.cli("upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert FAST not in result.stderr
    assert "Traceback" not in result.stderr
    return result


def reshaped(path: Path, **fields: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


SHAPES: dict[str, Callable[[Path], object]] = {
    "revisions a list": lambda path: reshaped(path, revisions=["a", "b"]),
    "revisions a string": lambda path: reshaped(path, revisions="e0f32d6aab59"),
    "heads a number": lambda path: reshaped(path, heads=7),
    "database a list": lambda path: reshaped(path, database=["app.db"]),
    "a file outside migrations/versions": lambda path: reshaped(
        path,
        revisions={rev: f"../../{name}" for rev, name in json.loads(path.read_text())["revisions"].items()},
    ),
    "not an object": lambda path: path.write_text("[1, 2]"),
    "nested 200,000 deep": lambda path: path.write_text("[" * 200_000 + "]" * 200_000),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_record_of_the_wrong_shape_hands_over_and_is_written_anew(
    project_copy: Project, record: Path, shape: str
) -> None:
    SHAPES[shape](record)

    hands_over(project_copy)

    assert FAST in project_copy.cli("upgrade").stderr  # the full run wrote a sound record again


def test_a_fifo_at_the_record_path_neither_hangs_nor_stays(project_copy: Project, record: Path) -> None:
    record.unlink()
    os.mkfifo(record)

    result = workers.cli(project_copy.root, ["upgrade"], base_env(), timeout=20)

    assert result.returncode == 0, result.stderr
    assert FAST not in result.stderr
    assert record.is_file()  # replaced by the full run's record
    assert FAST in project_copy.cli("upgrade").stderr


def test_a_directory_at_the_record_path_leaves_no_partial_file(project_copy: Project, record: Path) -> None:
    record.unlink()
    record.mkdir()

    for _ in range(2):
        hands_over(project_copy)

    assert sorted(path.name for path in record.parent.iterdir()) == [record.name]


def test_a_record_copied_from_another_checkout_does_not_answer_for_it(
    project_copy: Project, record: Path, tmp_path: Path
) -> None:
    other = Project.copy_to(tmp_path / "other")  # the same files, times and all
    assert other.cli("upgrade").returncode == 0
    (theirs,) = (other.root / ".dbtools").glob("upgrade-*.json")
    (project_copy.root / "app.db").unlink()  # this checkout's database is gone...
    shutil.copyfile(theirs, record)  # ...and the other's record is under this checkout's key

    hands_over(project_copy)

    assert current_revision(app_db(project_copy)) == project_copy.heads()[0]


def test_a_database_url_edit_in_alembic_ini_is_seen_at_the_same_size_and_time(
    project_copy: Project, record: Path
) -> None:
    ini = project_copy.root / "alembic.ini"
    info = ini.stat()
    ini.write_text(ini.read_text().replace("sqlite:///app.db", "sqlite:///app.dc"))
    os.utime(ini, ns=(info.st_atime_ns, info.st_mtime_ns))

    hands_over(project_copy)

    other = URL.create("sqlite", database=str(project_copy.root / "app.dc"))
    assert current_revision(other) == project_copy.heads()[0]


def test_a_writer_holding_a_write_transaction_sends_it_to_the_full_run(
    project_copy: Project, record: Path
) -> None:
    quick = {"MIGRATION_LOCK_TIMEOUT": "0.2"}
    assert FAST not in project_copy.cli("upgrade", env=quick).stderr  # new settings: recorded anew
    assert FAST in project_copy.cli("upgrade", env=quick).stderr
    with closing(sqlite3.connect(project_copy.root / "app.db", isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # readers may still read: a writer is at work all the same

        result = project_copy.cli("upgrade", env=quick)

    assert FAST not in result.stderr
    assert "MIGRATION_LOCK_TIMEOUT=0.2s" in failed_line(result)

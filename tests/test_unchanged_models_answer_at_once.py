"""`make check` and `make migration` with nothing changed answer without SQLAlchemy, and only then.

After a full comparison found the models and the database alike, the next
one answers from its record (``dbtools.runtime.nochange``). Each case below
changes one thing the answer depends on: the record must then stay silent
and the full comparison tell the truth.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.helpers import VENV, Project, base_env, failed_line

SHORT = "[dbtools.runtime.nochange]"


@pytest.fixture
def looked(project_copy: Project, tmp_path: Path) -> URL:
    """A database at head, and a full `make check` that found it like the models."""
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    project_copy.migrate(url)
    first = project_copy.cli("check", url=url)
    assert first.returncode == 0, first.stderr
    assert SHORT not in first.stderr
    return url


def test_nothing_changed_is_answered_without_importing_sqlalchemy(project_copy: Project, looked: URL) -> None:
    argv = [str(VENV / "bin" / "python"), "-X", "importtime", "-m", "dbtools", "check"]
    result = subprocess.run(
        argv, cwd=project_copy.root, env=base_env(looked), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "No new upgrade operations detected.\n"  # what the full check prints
    assert SHORT in result.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if "import time:" in line
    }
    assert not imported & {"sqlalchemy", "alembic", "models"}

    before = sorted(project_copy.versions.iterdir())
    made = project_copy.make("migration", "msg=nothing changed", url=looked)  # through make, as typed
    assert made.returncode == 0, made.stderr
    assert made.stdout == "No changes detected; no migration written.\n"
    assert SHORT in made.stderr
    assert sorted(project_copy.versions.iterdir()) == before


def add_model_column(project: Project, url: URL) -> None:
    model = project.root / "models" / "user.py"
    model.write_text(
        model.read_text().replace(
            "    def __repr__", "    nick: Mapped[str | None] = mapped_column(String(20))\n\n    def __repr__"
        )
    )


def add_column_by_hand(project: Project, url: URL) -> None:
    with closing(sqlite3.connect(str(url.database))) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN nick VARCHAR(20)")
        conn.commit()


def forget_the_revision(project: Project, url: URL) -> None:
    with closing(sqlite3.connect(str(url.database))) as conn:
        conn.execute("DELETE FROM alembic_version")
        conn.commit()


CHANGES: dict[str, tuple[Callable[[Project, URL], None], str]] = {
    "a model edited": (add_model_column, "add_column"),
    "the schema changed by hand": (add_column_by_hand, "remove_column"),
    "the database no longer at head": (forget_the_revision, "no migration history"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_change_is_compared_in_full(project_copy: Project, looked: URL, change: str) -> None:
    make_change, verdict = CHANGES[change]
    make_change(project_copy, looked)
    assert verdict in failed_line(project_copy.cli("check", url=looked))
    made = project_copy.cli("migration", "--message=next", "--renames=", url=looked)
    assert SHORT not in made.stderr
    assert "No changes detected" not in made.stdout


def test_other_settings_renames_a_stale_snapshot_or_a_bad_record_compare_in_full(
    project_copy: Project, looked: URL
) -> None:
    migration = ("migration", "--message=next", "--renames=")
    assert SHORT in project_copy.cli(*migration, url=looked).stderr
    assert SHORT not in project_copy.cli(*migration, url=looked, env={"MIGRATION_LOCK_TIMEOUT": "9"}).stderr
    assert SHORT not in project_copy.cli("migration", "--message=next", "--renames=a=b", url=looked).stderr

    snapshot = project_copy.root / "schema" / "postgresql.sql"
    text = snapshot.read_text()
    head = "-- PostgreSQL schema at migration head "
    snapshot.write_text(text.replace(head, f"{head}0", 1))  # as if written at another revision
    assert SHORT not in project_copy.cli("check", url=looked).stderr  # schema/ changed: in full
    assert SHORT in project_copy.cli("check", url=looked).stderr
    # make migration's full run would say the snapshot is behind (when the models need its facts).
    assert SHORT not in project_copy.cli(*migration, url=looked).stderr
    snapshot.write_text(text)

    assert SHORT not in project_copy.cli("check", url=looked).stderr  # schema/ changed since: in full
    record = max(
        (project_copy.root / ".dbtools").glob("compared-*.json"), key=lambda path: path.stat().st_mtime_ns
    )
    record.write_text(json.dumps({**json.loads(record.read_text()), "heads": "nope"}))
    again = project_copy.cli("check", url=looked)
    assert again.returncode == 0, again.stderr
    assert SHORT not in again.stderr
    assert SHORT in project_copy.cli("check", url=looked).stderr  # written anew by the full check

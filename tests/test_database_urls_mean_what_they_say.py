"""A DATABASE_URL migrates exactly the database it names, or is refused in one line.

A URL that SQLite or SQLAlchemy would quietly read another way (a trailing
space, a URI filename, a parameter SQLite ignores) must never migrate a
different file and exit 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.helpers import Project, current_revision, failed_line, url_string


def test_whitespace_around_the_url_is_refused_and_creates_nothing(project: Project, tmp_path: Path) -> None:
    raw = f"sqlite:///{tmp_path / 'app.db'} "

    line = failed_line(project.cli("upgrade", env={"DATABASE_URL": raw}))

    assert "whitespace" in line
    assert list(tmp_path.iterdir()) == []


def test_a_uri_filename_is_resolved_from_the_project_and_migrated(project_copy: Project) -> None:
    (project_copy.root / "data").mkdir()
    raw = "sqlite:///file:data/app.db?uri=true"

    result = project_copy.cli("upgrade", env={"DATABASE_URL": raw})

    assert result.returncode == 0, result.stderr
    database = project_copy.root / "data" / "app.db"
    assert current_revision(URL.create("sqlite", database=str(database))) == project_copy.heads()[0]
    assert [p.name for p in project_copy.root.rglob("file:*")] == []


def test_a_read_only_uri_is_refused_for_migrating_and_fine_for_looking(
    project_copy: Project, tmp_path: Path
) -> None:
    database = tmp_path / "app.db"
    project_copy.migrate(URL.create("sqlite", database=str(database)), "base")
    raw = f"sqlite:///file:{database}?mode=ro&uri=true"
    content = database.read_bytes()

    line = failed_line(project_copy.cli("upgrade", env={"DATABASE_URL": raw}))

    assert "read-only (mode=ro)" in line
    assert database.read_bytes() == content
    for looking in ("status", "current", "verify"):
        result = project_copy.cli(looking, env={"DATABASE_URL": raw})
        assert result.returncode == 0, result.stderr
    assert database.read_bytes() == content


def test_a_parameter_sqlite_would_ignore_is_refused(project: Project, tmp_path: Path) -> None:
    raw = f"sqlite:///{tmp_path / 'app.db'}?mode=ro"

    result = project.cli("upgrade", env={"DATABASE_URL": raw})

    line = failed_line(result)
    assert "SQLite ignores mode" in line
    assert "uri=true" in line
    assert "Warning" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_heroku_style_postgres_urls_are_accepted(project: Project, pg_admin_url: URL) -> None:
    from dbtools import pgserver

    with pgserver.fresh_database(pg_admin_url) as url:
        raw = url_string(url).replace("postgresql+psycopg://", "postgres://")

        result = project.cli("upgrade", env={"DATABASE_URL": raw})

        assert result.returncode == 0, result.stderr
        assert current_revision(url) == project.heads()[0]


def test_a_non_ascii_path_is_shown_as_spelled(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "Projekte für Zoë"
    folder.mkdir()
    url = URL.create("sqlite", database=str(folder / "app.db"))
    project.migrate(url)

    result = project.cli("verify", url=url)

    assert result.returncode == 0, result.stderr
    assert f"sqlite:///{folder}/app.db match their files" in result.stdout
    assert "%C3" not in result.stdout


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://app:Pa@ss:Hidden99@db.example.com/app",
        "postgresql://app:Pa@ssHidden99@db.example.com/app",
        "postgresql://app:Hidden99@[::1/app",
    ],
    ids=["at-and-colon", "at-only", "unclosed-ipv6"],
)
def test_a_url_that_needs_percent_encoding_is_one_line_without_any_of_the_password(
    project: Project, raw: str
) -> None:
    """An unencoded @ or : in the password must not be parsed as a port or a host, and echoed."""
    env = {"DATABASE_URL": raw}
    results = {
        "make upgrade": project.cli("upgrade", env=env),
        "make status": project.cli("status", env=env),
        "make sql": project.forked_alembic("upgrade", "head", "--sql", env=env),
        "alembic current": project.forked_alembic("current", env=env),
    }

    for command, result in results.items():
        line = failed_line(result)
        assert "DATABASE_URL is not a valid database URL" in line, command
        assert "percent-encode" in line, command
        assert "Hidden99" not in result.stdout + result.stderr, command
        assert "ss@" not in result.stdout + result.stderr, command

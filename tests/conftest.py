"""Fixtures: one suite, two backends.

Every test that takes ``database_url`` runs on a new SQLite file and on a new
database of a real PostgreSQL server: ``TEST_DATABASE_URL`` (a superuser
URL) if given, else a throwaway server started from the local installation,
one for the whole run, which every xdist worker shares.
With neither, the PostgreSQL leg is skipped and says so, unless
``REQUIRE_POSTGRESQL=1`` (as in CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL, Engine

from dbtools import pgserver
from dbtools.target import Target
from tests.helpers import ROOT, Project, url_string
from tests.revision_data import REVISION_DATA

# As on a machine that never set PYTHONDONTWRITEBYTECODE (this one does): Python writes
# bytecode, in this process and in every command a test runs, so a stale .pyc shows
# (dbtools.runtime.bytecode; tests/test_stale_bytecode_never_runs.py).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

BACKENDS = ["sqlite", "postgresql"]
SERVER_BASE = pytest.StashKey[Path]()
RAM_DISK = Path("/dev/shm")  # noqa: S108 - only the parent of a folder mkdtemp makes


def pytest_configure(config: pytest.Config) -> None:
    """Without TEST_DATABASE_URL, start one throwaway server before xdist starts its workers.

    The workers (and the commands the tests run) inherit its URL as
    TEST_DATABASE_URL, as in CI: one initdb and one server for the run,
    instead of one per worker.
    """
    if hasattr(config, "workerinput") or os.environ.get("TEST_DATABASE_URL") or pgserver.bindir() is None:
        return
    base = _server_base()
    try:
        url = pgserver.start(base)
    except Exception:
        # Left to the tests that need a server: pg_admin_url tries again and reports why.
        with contextlib.suppress(Exception):
            _stop(base)
        return
    config.stash[SERVER_BASE] = base
    os.environ["TEST_DATABASE_URL"] = url_string(url)


def pytest_unconfigure(config: pytest.Config) -> None:
    base = config.stash.get(SERVER_BASE, None)
    if base is None:
        return
    del os.environ["TEST_DATABASE_URL"]
    _stop(base)


def _server_base() -> Path:
    """Where the server keeps its files: in memory when a tmpfs with room for them is there.

    Each test database is a thousand small files, created then deleted; on
    ext4 creating files among many recently deleted ones costs the server
    several times the CPU it costs on a tmpfs. Not under a private temp
    root: the server may run as another user.
    """
    in_memory = None
    with contextlib.suppress(OSError):
        disk = os.statvfs(RAM_DISK)
        if disk.f_bavail * disk.f_frsize >= 2**30 and os.access(RAM_DISK, os.W_OK):
            in_memory = str(RAM_DISK)
    return Path(tempfile.mkdtemp(prefix="pgserver-", dir=in_memory))


def _stop(base: Path) -> None:
    try:
        pgserver.stop(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[URL]:
    if not os.environ.get("TEST_DATABASE_URL") and pgserver.bindir() is None:
        reason = "PostgreSQL leg skipped: no TEST_DATABASE_URL and no local PostgreSQL (initdb) to start"
        if os.environ.get("REQUIRE_POSTGRESQL") == "1":
            pytest.fail(reason.replace("skipped", "required (REQUIRE_POSTGRESQL=1)"))
        pytest.skip(reason)
    with pgserver.server() as admin:
        yield admin


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[URL]:
    """A new, empty database on the backend under test."""
    if backend == "sqlite":
        yield URL.create("sqlite", database=str(tmp_path / "app.db"))
        return
    admin: URL = request.getfixturevalue("pg_admin_url")
    with pgserver.fresh_database(admin) as url:
        yield url


@pytest.fixture
def project() -> Project:
    """The real checkout, for tests that change no file in it."""
    return Project(ROOT)


@pytest.fixture
def project_copy(tmp_path: Path) -> Project:
    """A copy of the project that a test may add migrations or models to."""
    return Project.copy_to(tmp_path / "project")


@pytest.fixture
def nickname_history(project_copy: Project) -> list[str]:
    """The real head, then a migration adding a nullable column: [head, new]."""
    return project_copy.extend_history(
        (
            'op.add_column("users", sa.Column("nickname", sa.String(32)))',
            'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("nickname")',
        )
    )


# pytest-alembic: the real migrations, on each backend, through the same
# engine setup env.py uses (a transaction per run, BEGIN IMMEDIATE on SQLite).
# Every migration runs with realistic rows in its tables (tests/revision_data.py).
@pytest.fixture
def alembic_config() -> dict[str, Any]:
    return {"file": str(ROOT / "alembic.ini"), "at_revision_data": REVISION_DATA}


@pytest.fixture
def alembic_engine(database_url: URL) -> Iterator[Engine]:
    engine = Target.of(database_url).engine()
    try:
        yield engine
    finally:
        engine.dispose()


def _seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 1))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the longest tests first, each on its own worker: the suite takes as long as its slowest worker.

    xdist sends each worker two tests at a time (``--maxschedchunk=2``), in
    this order: the slow tests are paired, longest with shortest, so no
    worker starts with two long ones queued behind each other.
    """
    slow = sorted((item for item in items if _seconds(item)), key=_seconds, reverse=True)
    heavy, light = slow[: (len(slow) + 1) // 2], slow[(len(slow) + 1) // 2 :][::-1]
    paired = [item for pair in itertools.zip_longest(heavy, light) for item in pair if item is not None]
    items[:] = paired + [item for item in items if not _seconds(item)]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker more than cores: most tests spend their time waiting on a CLI run or the server."""
    return (os.cpu_count() or 1) + 1

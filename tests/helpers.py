"""Drive the project as its users do: the real CLI, on real databases."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

ROOT = Path(__file__).resolve().parent.parent
# The virtualenv running the tests; copies of the project reuse it.
VENV = Path(sys.prefix)
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "app.db*", "__pycache__", ".*_cache", ".dbtools")


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def base_env(url: URL | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAKEFLAGS", "MAKELEVEL")}
    if url is not None:
        env["DATABASE_URL"] = url_string(url)
    env.update(extra)
    return env


@dataclass
class Project:
    """A checkout of this project: the real one, or a copy a test may edit."""

    root: Path

    @classmethod
    def copy_to(cls, target: Path) -> Project:
        shutil.copytree(ROOT, target, ignore=COPY_IGNORE)
        return cls(target)

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    def alembic_argv(self, *args: str) -> list[str]:
        return [str(VENV / "bin" / "alembic"), "-c", self.ini, *args]

    def alembic(
        self,
        *args: str,
        url: URL | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            self.alembic_argv(*args), cwd=cwd or self.root, env={**base_env(url), **(env or {})}, **kwargs
        )

    def migrate(self, url: URL, target: str = "head", action: str = "upgrade") -> None:
        """Bring a database to ``target`` as a test's starting point.

        The same Alembic command and env.py as the CLI, in a forked process:
        a CLI process spends half a second importing, and setup steps are many.
        """
        from tests import workers

        assert workers.run_together(self.ini, url, 1, action=action, target=target) == [0]

    def make_argv(self, *args: str) -> list[str]:
        return ["make", "--no-print-directory", "-C", str(self.root), f"VENV={VENV}", *args]

    def make(
        self, *args: str, url: URL | None = None, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return run(self.make_argv(*args), cwd=self.root, env={**base_env(url), **(env or {})}, **kwargs)

    def cli(
        self, *argv: str, url: URL | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m dbtools *argv`` in this project, forked from the test process (tests.workers.cli)."""
        from tests import workers

        return workers.cli(self.root, argv, {**base_env(url), **(env or {})})

    def forked_alembic(
        self, *args: str, url: URL | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``alembic -c alembic.ini *args`` in this project, forked from the test process."""
        from tests import workers

        return workers.cli(self.root, ["-c", self.ini, *args], {**base_env(url), **(env or {})}, "alembic")

    @property
    def ini(self) -> str:
        return str(self.root / "alembic.ini")

    def heads(self) -> list[str]:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        return list(ScriptDirectory.from_config(Config(self.ini)).get_heads())

    @property
    def head_file(self) -> Path:
        return self.root / "migrations" / "head.txt"

    def recorded_head(self) -> str:
        """The revision migrations/head.txt records (its one line that is not a comment)."""
        (line,) = [line for line in self.head_file.read_text().splitlines() if not line.startswith("#")]
        return line

    def extend_history(self, *migrations: tuple[str, str]) -> list[str]:
        """Append (upgrade, downgrade) migrations after head; return every revision, oldest first."""
        history = [self.heads()[0]]
        for upgrade, downgrade in migrations:
            history.append(self.add_migration(upgrade, downgrade))
        return history

    def add_migration(
        self,
        upgrade: str,
        downgrade: str = "pass",
        imports: str = "",
        down_revision: str | None = None,
        *,
        updates_head_file: bool = True,
    ) -> str:
        """Append a hand-written migration after the current head; return its id.

        Appended after the head, it is recorded in migrations/head.txt as `alembic revision`'s
        hook would (``updates_head_file=False``: as a file copied in by hand leaves it).
        """
        down = down_revision or self.heads()[0]
        rev = uuid.uuid4().hex[:12]

        def block(code: str) -> str:
            return textwrap.indent(textwrap.dedent(code).strip(), "    ")

        source = (
            '"""test migration"""\n'
            f"import sqlalchemy as sa\nfrom alembic import op\n{imports}\n\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n{block(upgrade)}\n\n\n"
            f"def downgrade() -> None:\n{block(downgrade)}\n"
        )
        (self.versions / f"9999_{rev}_test.py").write_text(source)
        if updates_head_file and down_revision is None:
            from alembic_linear_migrations import head

            head.write(self.head_file, rev)
        return rev


def run(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=120, **kwargs)


def as_plain_user() -> None:
    """Make file permissions bind even for root (CI runs as root): a subprocess's preexec_fn.

    Dropping the override capabilities from the bounding set before exec
    leaves root without them in the new program, like any other user.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def as_from_a_terminal() -> None:
    """SIGINT as a shell delivers it: a test worker may ignore or block it, and children inherit that.

    A subprocess's preexec_fn, for every test that sends Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def failed_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single FAILED line of a clean refusal; fails on tracebacks or success."""
    assert result.returncode != 0, f"expected a failure:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("FAILED: ")]
    assert len(lines) == 1, f"expected one FAILED line on stderr:\n{result.stderr}"
    return lines[0]


def engine_for(url: URL, **kwargs: Any) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool, **kwargs)


def dump(url: URL) -> dict[str, Any]:
    """Everything a migration could change: schema, constraints, rows, revision."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables: dict[str, Any] = {}
            for name in sorted(inspector.get_table_names()):
                rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()
                tables[name] = {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                        for c in inspector.get_columns(name)
                    ],
                    "pk": inspector.get_pk_constraint(name),
                    "unique": sorted(inspector.get_unique_constraints(name), key=lambda c: str(c["name"])),
                    "indexes": sorted(inspector.get_indexes(name), key=lambda i: str(i["name"])),
                    "rows": sorted((tuple(r) for r in rows), key=repr),
                }
            if url.get_backend_name() == "sqlite":
                tables["sqlite_master"] = conn.exec_driver_sql(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
                ).all()
            return tables
    finally:
        engine.dispose()


def current_revision(url: URL) -> str | None:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    finally:
        engine.dispose()


def recorded_checksums(url: URL) -> dict[str, str]:
    """The checksum table's rows; empty when the table does not exist."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_checksums"):
                return {}
            rows = conn.exec_driver_sql("SELECT revision, checksum FROM alembic_checksums")
            return {revision: checksum for revision, checksum in rows}
    finally:
        engine.dispose()


def insert_users(url: URL, count: int, prefix: str = "user") -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO users (username, email) VALUES (:u, :e)"),
                [{"u": f"{prefix}{i}", "e": f"{prefix}{i}@example.com"} for i in range(count)],
            )
    finally:
        engine.dispose()


def query(url: URL, sql: str) -> list[tuple[object, ...]]:
    """The rows ``sql`` returns, as tuples, on a connection of its own."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def execute(url: URL, *statements: str) -> None:
    """Run raw SQL in one committed transaction, as another client would."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def rendered(op: Any) -> str:
    """An autogenerate operation as ``make migration`` writes it in a migration's body (unindented)."""
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    from dbtools.autogenerate import render  # noqa: F401  # registers the project's renderers

    code = render_python_code(ops.UpgradeOps([op]))
    lines = [line for line in code.splitlines() if not line.lstrip().startswith("# ###")]
    return textwrap.dedent("\n".join(lines)).strip()

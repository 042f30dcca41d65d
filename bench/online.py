"""``make bench-online``: each change applied under live application traffic, plain against online.

On a throwaway PostgreSQL server (or ``TEST_DATABASE_URL``'s), ``users`` holds
1,000,000 rows (``--rows``). For each change in the README's lock table, the
migration is generated twice by ``make migration``'s code against SQLite: once
as plain Alembic renders it (the online rewriter off: the baseline), once as
this project renders it. Each is then applied with ``make upgrade``'s CLI to a
copy of the same database while writers insert and update users by id and
readers select them by email, each on its own connection, without pause.

Reported per change and rendering: the migration's wall time, the longest an
application query took while it ran (the stall), the p99 latency, and the
application's errors. The table goes to bench/online.md, one latency-over-time
plot per change to bench/online-<change>.png, both referenced by the README.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from bench.harness import copy_project, machine
from dbtools import pgserver

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "online.md"
WRITERS, READERS = 4, 4
# Between one client's queries: a busy application, not one that saturates the machine's cores.
PAUSE = 0.005
FORK = multiprocessing.get_context("fork")
# The application's own statements, each autocommitted, as a web request's would be.
USER_MODEL = '''"""Users, with the columns the benchmark's changes touch."""

from datetime import datetime

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.types import UTCDateTime


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=func.current_timestamp())
    team_id: Mapped[int | None]
    code: Mapped[str | None] = mapped_column(String(20))
    nickname: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[int | None]
'''
FILL = (
    "INSERT INTO teams (id) SELECT i FROM generate_series(1, 100) AS i",
    "INSERT INTO users (username, email, team_id, code, nickname, score) "
    "SELECT 'user' || i, 'user' || i || '@example.com', i % 100 + 1, 'c' || i, 'n' || i, i "
    "FROM generate_series(1, {rows}) AS i",
    "VACUUM ANALYZE",
)


@dataclass(frozen=True)
class Change:
    name: str
    lock: str  # what Alembic's plain rendering takes, from the README's table
    old: str
    new: str
    rewrites: bool = False  # a table rewrite: reported, but not held to the goals


CHANGES = (
    Change(
        "add an index",
        "SHARE",
        "score: Mapped[int | None]\n",
        "score: Mapped[int | None] = mapped_column(index=True)\n",
    ),
    Change(
        "add a foreign key",
        "SHARE ROW EXCLUSIVE",
        "team_id: Mapped[int | None]\n",
        'team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))\n',
    ),
    Change(
        "add a unique constraint",
        "ACCESS EXCLUSIVE",
        "code: Mapped[str | None] = mapped_column(String(20))",
        "code: Mapped[str | None] = mapped_column(String(20), unique=True)",
    ),
    Change(
        "make a column NOT NULL",
        "ACCESS EXCLUSIVE",
        "nickname: Mapped[str | None] = mapped_column(String(64))",
        "nickname: Mapped[str] = mapped_column(String(64))",
    ),
    Change(
        "add a check constraint",
        "ACCESS EXCLUSIVE",
        '    __tablename__ = "users"\n',
        '    __tablename__ = "users"\n'
        '    __table_args__ = (CheckConstraint("score >= 0", name="score_not_negative"),)\n',
    ),
    Change(
        "change a column's type",
        "ACCESS EXCLUSIVE",
        "score: Mapped[int | None]\n",
        "score: Mapped[int | None] = mapped_column(BigInteger)\n",
        rewrites=True,
    ),
)


@dataclass
class Traffic:
    """The application: processes (no shared GIL) recording each query's start and latency."""

    url: str
    rows: int
    stop: Any = field(default_factory=lambda: FORK.Event())
    results: Any = field(default_factory=lambda: FORK.Queue())
    started: float = field(default_factory=time.monotonic)
    processes: list[Any] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for role in ["writer"] * WRITERS + ["reader"] * READERS:
            process = FORK.Process(
                target=_client, args=(role, self.url, self.rows, self.started, self.stop, self.results)
            )
            process.start()
            self.processes.append(process)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()

    def collect(self) -> tuple[list[tuple[float, float]], list[str]]:
        samples: list[tuple[float, float]] = []
        errors: list[str] = []
        for _ in self.processes:
            some, failed = self.results.get(timeout=120)
            samples += some
            errors += failed
        for process in self.processes:
            process.join(timeout=30)
        return samples, errors


def _client(role: str, url: str, rows: int, started: float, stop: Any, results: Any) -> None:
    """One application connection, querying without pause until told to stop."""
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    rng = random.Random()  # noqa: S311 (load, not secrets)
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            began = time.monotonic()
            try:
                if role == "reader":
                    email = f"user{rng.randint(1, rows)}@example.com"
                    conn.execute("SELECT id, username FROM users WHERE email = %s", (email,)).fetchall()
                elif rng.random() < 0.5:
                    n = rng.randrange(10**12)
                    conn.execute(
                        "INSERT INTO users (username, email, team_id, code, nickname, score) "
                        "VALUES (%s, %s, 1, %s, 'new', 1)",
                        (f"new{n}", f"new{n}@example.com", f"x{n}"),
                    )
                else:
                    conn.execute("UPDATE users SET score = score + 1 WHERE id = %s", (rng.randint(1, rows),))
            except psycopg.Error as exc:
                errors.append(str(exc).splitlines()[0])
            samples.append((began - started, time.monotonic() - began))
            time.sleep(PAUSE)
    results.put((samples, errors))


@dataclass
class Outcome:
    change: Change
    rendering: str  # "plain" or "online"
    wall: float
    stall: float
    p99: float
    errors: list[str]
    timeline: list[tuple[float, float]]  # (seconds from the migration's start, latency)
    failed: str = ""
    worst_stall: float = 0.0  # over the repeats; ``stall`` is their median


def median_of(runs: list[Outcome]) -> Outcome:
    """The run with the median stall, its wall time and p99 the medians too, errors summed."""
    ordered = sorted(runs, key=lambda run: run.stall)
    middle = ordered[len(ordered) // 2]
    return Outcome(
        middle.change,
        middle.rendering,
        wall=statistics.median(run.wall for run in runs),
        stall=middle.stall,
        p99=statistics.median(run.p99 for run in runs),
        errors=[error for run in runs for error in run.errors],
        timeline=middle.timeline,
        failed=next((run.failed for run in runs if run.failed), ""),
        worst_stall=ordered[-1].stall,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.online", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each change and rendering")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-online-") as folder, pgserver.server() as admin:
        outcomes = list(run_all(Path(folder), admin, options.rows, options.repeat))
    write_results(outcomes, options.rows, options.repeat)


def run_all(folder: Path, admin: URL, rows: int, repeat: int) -> Iterator[Outcome]:
    prepared = prepare(folder / "prepared", admin, rows)
    try:
        for change in CHANGES:
            for rendering in ("plain", "online"):
                project = folder / f"{CHANGES.index(change)}-{rendering}"
                shutil.copytree(folder / "prepared", project)
                generate(project, change, online=rendering == "online")
                runs = []
                for _ in range(repeat):
                    runs.append(apply(project, admin, prepared, change, rendering, rows))
                    print(f"{change.name:26} {rendering:6} {_summary(runs[-1])}", flush=True)
                yield median_of(runs)
    finally:
        _admin_sql(admin, f"DROP DATABASE IF EXISTS {prepared} WITH (FORCE)")


def copy_with_bench_models(project: Path) -> None:
    """A copy of the project whose models have the benchmark's columns (``USER_MODEL``)."""
    copy_project(project)
    (project / "models" / "user.py").write_text(USER_MODEL)
    init = project / "models" / "__init__.py"
    init.write_text(
        init.read_text().replace("from models.user import User", "from models.user import Team, User")
    )


def prepare(project: Path, admin: URL, rows: int) -> str:
    """A copy of the project whose models have the benchmark's columns, and a filled template database."""
    copy_with_bench_models(project)
    generate(project, Change("prepare", "", "", ""), online=True)
    name = f"bench_online_{os.getpid()}"
    _admin_sql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin_sql(admin, f"CREATE DATABASE {name}")
    url = admin.set(database=name)
    _cli(project, url, "upgrade")
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        for statement in FILL:
            conn.execute(statement.format(rows=rows))
    return name


def generate(project: Path, change: Change, *, online: bool) -> None:
    """What ``make migration`` writes, with the online rewriter on or off; applied to the project's app.db."""
    model = project / "models" / "user.py"
    if change.old:
        text = model.read_text()
        assert change.old in text, change.name
        model.write_text(text.replace(change.old, change.new, 1))
        header = "from sqlalchemy import ForeignKey, String, func"
        model.write_text(
            model.read_text().replace(
                header, "from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, func"
            )
        )
    code = f"""
import sys
sys.path.insert(0, {str(project)!r})
from alembic import command
from alembic.config import Config
from dbtools.autogenerate import hooks
from dbtools.run import Run
config = Config({str(project / "alembic.ini")!r})
run = Run(creates_database=False, applies_migrations=False, autogenerates=True, renders_online={online!r})
command.revision(run.start_with(config), message={change.name!r}, autogenerate=True,
                 process_revision_directives=hooks.write_or_skip)
"""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{project / 'app.db'}"}
    _cli(project, None, "upgrade", env=env)
    subprocess.run([sys.executable, "-c", code], cwd=project, env=env, check=True, capture_output=True)


def apply(project: Path, admin: URL, prepared: str, change: Change, rendering: str, rows: int) -> Outcome:
    name = f"{prepared}_run"
    _admin_sql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin_sql(admin, f"CREATE DATABASE {name} TEMPLATE {prepared}")
    url = admin.set(database=name)
    with Traffic(_dsn(url), rows) as traffic:
        time.sleep(1.0)  # the application's steady state first
        began = time.monotonic()
        result = _cli(project, url, "upgrade", check=False)
        ended = time.monotonic()
        time.sleep(0.5)
    samples, errors = traffic.collect()
    _admin_sql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    start, end = began - traffic.started, ended - traffic.started
    during = [latency for at, latency in samples if at + latency >= start and at <= end]
    failed = (
        "" if result.returncode == 0 else f"  (migration FAILED: {result.stderr.strip().splitlines()[-1]})"
    )
    return Outcome(
        change,
        rendering,
        wall=ended - began,
        stall=max(during, default=0.0),
        p99=statistics.quantiles(during, n=100)[98] if len(during) >= 100 else max(during, default=0.0),
        errors=errors,
        timeline=[(at - start, latency) for at, latency in samples],
        failed=failed,
    )


def _cli(
    project: Path, url: URL | None, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    environment = dict(env or os.environ)
    if url is not None:
        environment["DATABASE_URL"] = url.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-m", "dbtools", *args], cwd=project, env=environment, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        said = result.stderr.strip()[-500:]
        raise SystemExit(f"bench-online: {' '.join(args)} failed in {project}: {said}")
    return result


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_sql(admin: URL, sql: str) -> None:
    with psycopg.connect(_dsn(admin), autocommit=True) as conn:
        conn.execute(sql)


# --- results ---------------------------------------------------------------


def write_results(outcomes: list[Outcome], rows: int, repeat: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    by_change: dict[str, dict[str, Outcome]] = {}
    for outcome in outcomes:
        by_change.setdefault(outcome.change.name, {})[outcome.rendering] = outcome
    lines = [
        "# `make bench-online`: changes under live application traffic",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by `make bench-online` (bench/online.py) on a",
        f"`users` table of {rows:,} rows, {WRITERS} writers (insert, update by id) and {READERS} readers",
        f"(select by email) running throughout, each on its own connection, {PAUSE * 1000:g} ms between",
        f"queries. Each change and rendering ran {repeat} times: the figures are the medians, the",
        "worst stall beside them. *Stall* is the longest any application query took while the",
        "migration ran. The goals: a stall below",
        "MIGRATION_DDL_LOCK_TIMEOUT (5 s) and at least 10x below the plain rendering's, zero errors, and",
        "a wall time within 3x the plain one. A table rewrite is not held to them.",
        "",
        "| change | lock (plain) | rendering | migration wall time | stall (worst) | p99 latency "
        "| app errors | stall: plain / online | wall: online / plain |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, pair in by_change.items():
        plain, online = pair["plain"], pair["online"]
        stall_ratio = plain.stall / online.stall if online.stall else float("inf")
        wall_ratio = online.wall / plain.wall if plain.wall else float("inf")
        for outcome in (plain, online):
            ratios = f"{stall_ratio:.0f}x | {wall_ratio:.2f}" if outcome is online else " | "
            measured = (
                f"{outcome.wall:.2f} s | {outcome.stall * 1000:.0f} ms ({outcome.worst_stall * 1000:.0f} ms) "
                f"| {outcome.p99 * 1000:.1f} ms "
                f"| {len(outcome.errors)}"
            )
            what = f"{outcome.change.lock} | {outcome.rendering}{outcome.failed}"
            lines.append(f"| {name} | {what} | {measured} | {ratios} |")
        figure, axes = pyplot.subplots(figsize=(8, 3.2))
        for outcome, colour in ((plain, "tab:red"), (online, "tab:blue")):
            xs = [at for at, _ in outcome.timeline]
            ys = [latency * 1000 for _, latency in outcome.timeline]
            # Each query from its start to its end, at the height of its latency: a stall is a long bar.
            ends = [x + y / 1000 for x, y in zip(xs, ys, strict=True)]
            label = f"{outcome.rendering} (migration {outcome.wall:.1f} s)"
            axes.hlines(ys, xs, ends, color=colour, linewidth=2, label=label)
            axes.scatter(xs, ys, s=2, color=colour)
        axes.set_yscale("log")
        axes.set_xlabel("seconds since the migration started")
        axes.set_ylabel("query latency (ms)")
        axes.set_title(f"{name}: application latency, plain against online")
        axes.axvline(0, color="grey", linewidth=0.5)
        axes.legend(loc="upper left")
        figure.tight_layout()
        figure.savefig(ROOT / "bench" / f"online-{_slug(name)}.png", dpi=110)
        pyplot.close(figure)
    lines += ["", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    lines += ["", *(f"![{name}](online-{_slug(name)}.png)" for name in by_change)]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nWrote {RESULTS.relative_to(ROOT)} and {len(by_change)} plots in bench/.")


def _summary(outcome: Outcome) -> str:
    return (
        f"wall {outcome.wall:6.2f}s  stall {outcome.stall * 1000:8.1f} ms  p99 {outcome.p99 * 1000:7.1f} ms  "
        f"errors {len(outcome.errors)}{outcome.failed}"
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


if __name__ == "__main__":
    main()

"""``make bench-fleet``: ``make upgrade fleet=`` against the field, side by side in one run.

- **PostgreSQL, schema per tenant**: 300 tenant schemas (``--schemas``) in one
  database of a throwaway server, each holding the ``users`` table. This
  project's ``make upgrade fleet=`` (one group, ``parallel = 4``, ``schemas =
  "tenant_*"``) against django-tenants' ``migrate_schemas`` with its standard
  and its multiprocessing executor (4 processes: the same bound) on the same
  300 schemas of a database of its own, holding the same table (bench/fleet_django.py).
  Twice: all at head (a no-op), and with one additive migration pending (a
  nullable column). Each run gets a fresh copy of a template database, and
  its peak connections are sampled from ``pg_stat_activity``.
- **SQLite, a file per tenant**: 1,000 files (``--files``), no-op and one
  pending, ``make upgrade fleet=`` against a shell loop of ``make upgrade``,
  one per file; and one single-target no-op ``make upgrade``, the unit the
  goal is measured in.

Every run is a whole command, start-up included, timed from here: what a
deploy pays. Sides alternate within each round (``--repeat``), so a noisy
neighbour slows both; the median is reported. Results go to bench/fleet.md,
the time per target plotted in bench/fleet.png.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from bench import fleet_django, fleet_results, harness
from dbtools import pgserver

ROOT = Path(__file__).resolve().parent.parent
PARALLEL = fleet_django.PROCESSES
RUN_DB = "bench_fleet_run"  # each measured PostgreSQL run's fresh copy of a template
SINGLE_RUNS = 9  # single-target no-ops per round: short, so more of them
# This project's pending migration: the nullable column the peer's 0002 adds too.
REPR = "    def __repr__"
NICKNAME = "    nickname: Mapped[str | None] = mapped_column(String(32))\n\n"
LOOP = 'for f in tenants/*.db; do DATABASE_URL="sqlite:///$f" make -s upgrade >/dev/null || exit 1; done'


@dataclass(frozen=True)
class Sizes:
    schemas: int
    files: int
    repeat: int


@dataclass(frozen=True)
class Side:
    """One command line measured: what a user types, in the folder they type it in."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]


@dataclass
class Measured:
    """A side's runs in one scenario: wall times (one per round) and the peak connections seen."""

    scenario: str
    side: str
    targets: int
    seconds: list[float] = field(default_factory=list)
    peak_connections: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def per_target(self) -> float:
        return self.median / self.targets


@dataclass
class Server:
    """The throwaway PostgreSQL server, spoken to as its superuser."""

    admin: URL

    @property
    def password(self) -> str:
        return self.admin.password or ""

    def dsn(self, database: str = "postgres") -> str:
        url = self.admin.set(drivername="postgresql", database=database)
        return url.render_as_string(hide_password=False)

    def url(self, database: str) -> str:
        """A fleet file's URL: no password in it (the fleet reads it from password_env)."""
        admin = self.admin
        return URL.create(
            admin.drivername, admin.username, None, admin.host, admin.port, database
        ).render_as_string()

    def sql(self, *statements: str, database: str = "postgres") -> None:
        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def count(self, query: str, database: str) -> int:
        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            row = conn.execute(query.encode()).fetchone()
        return int(row[0]) if row else 0

    def clone(self, template: str, name: str) -> None:
        self.sql(
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name} TEMPLATE {template}"
        )

    def drop(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PeakConnections:
    """The most connections to one database at once, sampled from pg_stat_activity every 10 ms."""

    def __init__(self, server: Server, database: str) -> None:
        self.server, self.database = server, database
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database,)
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                time.sleep(0.01)


def timed(side: Side) -> float:
    """A whole command's wall time; it failing ends the benchmark in one line (a failure measures nothing)."""
    began = time.perf_counter()
    done = subprocess.run(side.argv, cwd=side.cwd, env=side.env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.startswith("FAILED")] or [
            done.stderr[-300:]
        ]
        raise SystemExit(f"bench-fleet: {side.name} exited {done.returncode}: {said[-1].strip()}")
    return elapsed


# --- this project, in a copy whose history the benchmark extends -----------


def copy_project(project: Path) -> None:
    harness.copy_project(project, "bench", "tests")
    # make builds nothing: the benchmark's own virtualenv is the project's.
    (project / ".venv").symlink_to(sys.prefix)


def make(project: Path, *args: str) -> list[str]:
    return ["make", "-s", "-C", str(project), *args]


def setup(project: Path, *args: str, database_url: str = "") -> None:
    """An untimed make command in the copy, with DATABASE_URL when given."""
    env = {**os.environ, "DATABASE_URL": database_url} if database_url else dict(os.environ)
    timed(Side(f"setup: make {' '.join(args)}", make(project, *args), project, env))


def add_pending_migration(project: Path) -> None:
    """``make migration`` after adding the nullable column to the model, against a SQLite file at head."""
    model = project / "models" / "user.py"
    model.write_text(model.read_text().replace(REPR, NICKNAME + REPR, 1))
    url = f"sqlite:///{project / 'generate.db'}"
    setup(project, "upgrade", database_url=url)
    setup(project, "migration", "msg=add a nickname", database_url=url)


def fleet_file(project: Path, name: str, targets: str) -> str:
    """A one-group fleet file in the project folder; its path relative to it, as make takes it."""
    (project / name).write_text(
        f'[[group]]\nname = "tenants"\nparallel = {PARALLEL}\non_error = "continue"\ntargets = [{targets}]\n'
    )
    return name


def pg_fleet(project: Path, server: Server, database: str) -> str:
    target = f'{{ url = "{server.url(database)}", password_env = "BENCH_PASSWORD", schemas = "tenant_*" }}'
    return fleet_file(project, f"fleet-{database}.toml", target)


def ours_env(server: Server | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "MIGRATION_SCHEMA")}
    if server is not None:
        env["BENCH_PASSWORD"] = server.password
    return env


# --- the templates each measured run starts from ---------------------------


def schema_names(count: int) -> list[str]:
    return [f"tenant_{n:04d}" for n in range(1, count + 1)]


def ours_template(project: Path, server: Server, name: str, schemas: int) -> None:
    """A database with ``schemas`` empty tenant schemas, brought to head by the fleet."""
    server.drop(name)
    server.sql(f"CREATE DATABASE {name}")
    server.sql(*(f"CREATE SCHEMA {schema}" for schema in schema_names(schemas)), database=name)
    fleet = pg_fleet(project, server, name)
    timed(
        Side(
            "setup: make upgrade fleet=",
            make(project, "upgrade", f"fleet={fleet}"),
            project,
            ours_env(server),
        )
    )


def django_template(peer: fleet_django.DjangoProject, server: Server, name: str, schemas: int) -> None:
    """The same schemas for django-tenants: its public schema, a tenant row and a schema each."""
    server.drop(name)
    server.sql(f"CREATE DATABASE {name}")
    peer.run(name, "migrate_schemas", "--shared", "--noinput")
    rows = ", ".join(f"('{schema}', '{schema}')" for schema in schema_names(schemas))
    server.sql(
        f"INSERT INTO customers_client (schema_name, name) VALUES ('public', 'public'), {rows}",
        *(f"CREATE SCHEMA {schema}" for schema in schema_names(schemas)),
        database=name,
    )
    peer.run(name, "migrate_schemas", "--tenant", "--executor=multiprocessing", "--noinput")


def sqlite_template(project: Path, path: Path) -> None:
    setup(project, "upgrade", database_url=f"sqlite:///{path}")


def tenant_files(project: Path, template: Path, files: int) -> None:
    """``files`` copies of the template in project/tenants/, replacing any from the last run."""
    folder = project / "tenants"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(project / "backups", ignore_errors=True)
    folder.mkdir()
    for n in range(1, files + 1):
        shutil.copyfile(template, folder / f"t{n:05d}.db")


# --- checks: a side that did not do the work measured nothing --------------


def check_pg(server: Server, schemas: int, side: str) -> None:
    found = server.count(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema LIKE 'tenant\\_%' AND table_name = 'users' AND column_name = 'nickname'",
        RUN_DB,
    )
    if found != schemas:
        raise SystemExit(f"bench-fleet: after {side}, {found} of {schemas} schemas have the new column")


def check_sqlite(project: Path, files: int, side: str) -> None:
    found = 0
    for path in sorted((project / "tenants").glob("*.db")):
        with sqlite3.connect(path) as conn:
            found += any(row[1] == "nickname" for row in conn.execute("PRAGMA table_info(users)"))
        conn.close()
    if found != files:
        raise SystemExit(f"bench-fleet: after {side}, {found} of {files} files have the new column")


# --- the rounds -------------------------------------------------------------


@dataclass
class Bench:
    sizes: Sizes
    project: Path
    server: Server
    peer: fleet_django.DjangoProject
    results: dict[tuple[str, str], Measured] = field(default_factory=dict)

    def record(self, scenario: str, side: str, targets: int, seconds: float, peak: int | None = None) -> None:
        measured = self.results.setdefault((scenario, side), Measured(scenario, side, targets))
        measured.seconds.append(seconds)
        if peak is not None:
            measured.peak_connections = max(measured.peak_connections or 0, peak)
        print(f"{scenario:38} {side:46} {seconds:8.2f} s" + (f"  peak {peak} connections" if peak else ""))

    def postgresql_round(self) -> None:
        n = self.sizes.schemas
        fleet = pg_fleet(self.project, self.server, RUN_DB)
        ours = Side(
            fleet_results.OURS_FLEET,
            make(self.project, "upgrade", f"fleet={fleet}"),
            self.project,
            ours_env(self.server),
        )
        peer_env = self.peer.env(RUN_DB)
        standard = Side(
            fleet_results.DJ_STANDARD, self.peer.migrate_schemas("standard"), self.peer.site, peer_env
        )
        multi = Side(
            fleet_results.DJ_MULTI, self.peer.migrate_schemas("multiprocessing"), self.peer.site, peer_env
        )
        for scenario, state in ((fleet_results.PG_NOOP, "v2"), (fleet_results.PG_PENDING, "v1")):
            for side, template in (
                (ours, f"ours_{state}"),
                (standard, f"dj_{state}"),
                (multi, f"dj_{state}"),
            ):
                self.server.clone(template, RUN_DB)
                try:
                    if state == "v2":
                        timed(side)  # the deploy that found them at head: what it leaves, the next one finds
                    with PeakConnections(self.server, RUN_DB) as peak:
                        seconds = timed(side)
                    check_pg(self.server, n, side.name)
                finally:
                    self.server.drop(RUN_DB)
                self.record(scenario.format(n=n), side.name, n, seconds, peak.peak)
        self.postgresql_single()

    def postgresql_single(self) -> None:
        """One tenant schema's no-op ``make upgrade``, alone: what each of the fleet's targets costs."""
        env = {**ours_env(self.server), "MIGRATION_SCHEMA": "tenant_0001"}
        env["DATABASE_URL"] = URL.create(
            "postgresql+psycopg",
            self.server.admin.username,
            self.server.password,
            self.server.admin.host,
            self.server.admin.port,
            RUN_DB,
        ).render_as_string(hide_password=False)
        single = Side(fleet_results.SINGLE_SCHEMA, make(self.project, "upgrade"), self.project, env)
        self.server.clone("ours_v2", RUN_DB)
        try:
            timed(single)
            for _ in range(SINGLE_RUNS):
                with PeakConnections(self.server, RUN_DB) as peak:
                    seconds = timed(single)
                self.record(fleet_results.SINGLE_PG_NOOP, single.name, 1, seconds, peak.peak)
        finally:
            self.server.drop(RUN_DB)

    def sqlite_round(self) -> None:
        n = self.sizes.files
        fleet = fleet_file(self.project, "fleet-sqlite.toml", '"sqlite:///tenants/*.db"')
        env = ours_env(None)
        ours = Side(
            fleet_results.OURS_FLEET, make(self.project, "upgrade", f"fleet={fleet}"), self.project, env
        )
        loop = Side(fleet_results.SHELL_LOOP, ["bash", "-c", LOOP], self.project, env)
        single = Side(
            fleet_results.SINGLE,
            make(self.project, "upgrade"),
            self.project,
            {**env, "DATABASE_URL": "sqlite:///tenants/t00001.db"},
        )
        for scenario, state in ((fleet_results.SQLITE_NOOP, "v2"), (fleet_results.SQLITE_PENDING, "v1")):
            for side in (ours, loop):
                tenant_files(self.project, self.project / f"{state}.db", n)
                if state == "v2":
                    timed(side)  # the previous deploy: its full runs leave the fast path's record per file
                seconds = timed(side)
                check_sqlite(self.project, n, side.name)
                self.record(scenario.format(n=n), side.name, n, seconds)
            if state == "v2":
                timed(single)
                for _ in range(SINGLE_RUNS):
                    self.record(fleet_results.SINGLE_NOOP, single.name, 1, timed(single))

    def profiles(self) -> list[fleet_results.Profile]:
        """Where a no-op fleet's time goes: one of each kind, its own process under cProfile."""
        n, project = self.sizes.schemas, self.project
        self.server.clone("ours_v2", RUN_DB)
        try:
            postgresql = self.profile(
                fleet_results.PG_NOOP.format(n=n), pg_fleet(project, self.server, RUN_DB)
            )
        finally:
            self.server.drop(RUN_DB)
        tenant_files(project, project / "v2.db", self.sizes.files)
        sqlite = self.profile(fleet_results.SQLITE_NOOP.format(n=self.sizes.files), "fleet-sqlite.toml")
        return [postgresql, sqlite]

    def profile(self, scenario: str, fleet: str) -> fleet_results.Profile:
        """After a warm-up run (the previous deploy), ``python -m dbtools upgrade --fleet=`` under cProfile.

        cProfile sees the fleet's own process only; each target's run, forked from it, is
        timed by the fleet itself (the report's seconds).
        """
        env = ours_env(self.server)
        timed(Side("profile: warm-up", make(self.project, "upgrade", f"fleet={fleet}"), self.project, env))
        stats_file, report = self.project / "fleet.prof", self.project / "report.json"
        argv = ["dbtools", "upgrade", f"--fleet={fleet}", "--report=report.json"]
        code = (
            f"import cProfile, runpy, sys; sys.argv = {argv!r}; "
            f"cProfile.run(\"runpy.run_module('dbtools', run_name='__main__')\", {str(stats_file)!r})"
        )
        wall = timed(Side("profile", [sys.executable, "-c", code], self.project, env))
        stats = pstats.Stats(str(stats_file), stream=io.StringIO())
        fleet_run = max(
            (
                cumulative
                for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items()  # type: ignore[attr-defined]
                if function == "run" and "dbtools/fleet" in filename
            ),
            default=None,
        )
        stream = io.StringIO()
        stats.stream = stream  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(10)
        listing = stream.getvalue()
        listing = (
            listing[listing.index("ncalls") :].replace(f"{self.project}/", "").replace(f"{sys.prefix}/", "")
        )
        rows = json.loads(report.read_text())["targets"]
        # A target answered at head without a run reports the look's time, not a run's: left out.
        seconds = [t["seconds"] for t in rows if not t["reason"].startswith("at head:")]
        return fleet_results.Profile(
            scenario=scenario,
            wall=wall,
            profiled=stats.total_tt,  # type: ignore[attr-defined]
            fleet_run=fleet_run,
            targets=len(rows),
            answered=len(rows) - len(seconds),
            target_seconds=sum(seconds),
            slowest=max(seconds, default=0.0),
            top=listing,
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", type=int, default=300, help="tenant schemas in PostgreSQL")
    parser.add_argument("--files", type=int, default=1000, help="SQLite tenant files")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, sides alternated; the median is reported"
    )
    options = parser.parse_args()
    # Every side runs as Python does by default, its bytecode cached, as `make bench` measures:
    # a machine that sets PYTHONDONTWRITEBYTECODE has each command compile its project's modules anew.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sizes = Sizes(options.schemas, options.files, options.repeat)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder, pgserver.server() as admin:
        bench = prepare(Path(folder), Server(admin), sizes)
        try:
            for _ in range(sizes.repeat):
                bench.postgresql_round()
                bench.sqlite_round()
            profiles = bench.profiles()
        finally:
            for name in ("ours_v1", "ours_v2", "dj_v1", "dj_v2", RUN_DB):
                bench.server.drop(name)
    fleet_results.write(list(bench.results.values()), sizes, profiles, time.monotonic() - started)


def prepare(folder: Path, server: Server, sizes: Sizes) -> Bench:
    """The project copy and the peer, and every template at the first revision, then at the second."""
    project = folder / "project"
    copy_project(project)
    admin = server.admin
    assert admin.host is not None
    assert admin.port is not None
    database = fleet_django.Database(admin.host, admin.port, admin.username or "postgres", server.password)
    peer = fleet_django.create(folder / "django", database, "postgres")
    print(f"Preparing {sizes.schemas} schemas (twice) and {sizes.files} SQLite files ...", flush=True)
    ours_template(project, server, "ours_v1", sizes.schemas)
    django_template(peer, server, "dj_v1", sizes.schemas)
    sqlite_template(project, project / "v1.db")
    add_pending_migration(project)
    peer.add_pending_migration("dj_v1")
    for side, fleet_setup in (("ours", None), ("dj", peer)):
        server.clone(f"{side}_v1", f"{side}_v2")
        if fleet_setup is None:
            fleet = pg_fleet(project, server, "ours_v2")
            timed(Side("setup", make(project, "upgrade", f"fleet={fleet}"), project, ours_env(server)))
        else:
            fleet_setup.run("dj_v2", "migrate_schemas", "--executor=multiprocessing", "--noinput")
    shutil.copyfile(project / "v1.db", project / "v2.db")
    sqlite_template(project, project / "v2.db")
    return Bench(sizes, project, server, peer)


if __name__ == "__main__":
    main()

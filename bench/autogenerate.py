"""``make bench-autogenerate``: what ``make check`` and ``make migration`` cost, against 2122eca.

Why: issue 23 lets the autogenerate-fidelity work cost at most 1.5x what the
two commands cost before it (2122eca), warm and cold, measured side by side.
It also asked whether to compare against a warm scratch PostgreSQL; the
project compares with the SQLite database instead and reads PostgreSQL-only
facts from the committed schema/postgresql.sql. The last rows price the
design it did not take, so the choice rests on numbers.

Every measured step is the CLI a user runs (``make`` in a project folder, in a
subprocess): the working tree (HEAD) is copied, the baseline is checked out
into a temporary ``git worktree``, both run on this virtualenv (``VENV=``).
Sides alternate round by round (bench.harness), so a noisy neighbour slows
all alike. After one untimed run of each side (the OS cache then holds the
files and the virtualenv's tools alike for every side), "first run" is the
median of 3 rounds each started by removing the projects' own ``__pycache__``
(as after a checkout), "warm" the median of the rounds after them. A single
first run would be one sample on a shared, noisy machine. Results are printed
and written to bench/autogenerate.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from bench.harness import Series, compare, copy_project, machine
from dbtools import pgserver

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "autogenerate.md"
BASELINE = "2122eca"  # the commit before the autogenerate-fidelity work (issue 23)
BAR = 1.5
# One ordinary model edit: a nullable column, the same text at HEAD and at the baseline.
EDIT = (
    "    def __repr__",
    "    nickname: Mapped[str | None] = mapped_column(String(32))\n\n    def __repr__",
)
MSG = "add users.nickname"
ON_PG = "`DATABASE_URL` = a PostgreSQL database at head, warm server"
NOTHING = lambda: None  # noqa: E731 - a prepare step with nothing to prepare
Sides = dict[str, tuple[Callable[[], None], Callable[[], str | None]]]


@dataclass(frozen=True)
class Rounds:
    warm: int
    first: int = 3


@dataclass
class Row:
    group: str
    what: str
    series: tuple[Series, Series] | None  # first runs, warm runs; None: a sum set by the caller
    peer: Row | None = None  # the ratio's denominator; None: this row is the baseline
    held: bool = False  # held to the bar
    elsewhere: bool = False  # the peer was measured in another series
    warm: float = 0.0
    first: float = 0.0

    def __post_init__(self) -> None:
        if self.series is not None:
            self.first, self.warm = (series.seconds for series in self.series)

    @property
    def base(self) -> Row:
        return self.peer or self

    @property
    def compared_with(self) -> str:
        command = self.base.group.split(" (")[0]
        return f"{command} at {BASELINE}" + (" (another series)" if self.elsewhere else "")


# --- projects and commands -------------------------------------------------


@contextmanager
def projects(base: Path) -> Iterator[dict[str, Path]]:
    """The baseline (a worktree) and HEAD (copies of the working tree).

    HEAD twice, for SQLite and for PostgreSQL, so each side's first run compiles its own bytecode.
    """
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BASELINE}^{{commit}}"], check=False)
    if found.returncode != 0:
        raise SystemExit(f"bench-autogenerate: commit {BASELINE} is not in {ROOT} (a shallow clone?)")
    folders = {"baseline": base / "baseline", "head": base / "head", "head-pg": base / "head-pg"}
    for name in ("head", "head-pg"):
        copy_project(folders[name])
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--quiet", "--detach", str(folders["baseline"]), BASELINE], check=True)
    try:
        for folder in folders.values():
            # A fresh checkout is newer than the virtualenv's install stamps: make would run pip.
            for requirements in folder.glob("requirements*.txt"):
                os.utime(requirements, (0, 0))
        yield folders
    finally:
        subprocess.run([*git, "remove", "--force", str(folders["baseline"])], check=False)


def environment(url: URL | None = None) -> dict[str, str]:
    """The user's environment, minus this make's own and any DATABASE_URL (the default app.db)."""
    drop = {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "DATABASE_URL", "PYTHONDONTWRITEBYTECODE"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    if url is not None:
        env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    return env


def make(project: Path, *args: str, url: URL | None = None) -> Callable[[], None]:
    """``make -s <args>`` in ``project`` as a step; stdin closed, so nothing asks."""
    argv = ["make", "-s", "-C", str(project), f"VENV={sys.prefix}", *args]

    def step() -> None:
        done = subprocess.run(
            argv, env=environment(url), stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-2000:])
            raise RuntimeError(f"make {' '.join(args)} failed in {project} ({done.returncode})")

    return step


def cold(*folders: Path) -> None:
    """Remove the projects' own bytecode: the next run compiles it, as after a checkout."""
    for folder in folders:
        for cache in list(folder.rglob("__pycache__")):
            shutil.rmtree(cache)


def measure(folders: Iterable[Path], rounds: Rounds, sides: Sides) -> dict[str, tuple[Series, Series]]:
    """An untimed run of each side, the first-run rounds (bytecode removed before each), the warm rounds."""
    for prepare, step in sides.values():
        prepare()
        step()
    first = {name: Series() for name in sides}
    for _ in range(rounds.first):
        cold(*folders)
        for name, one in compare(1, sides).items():
            first[name].samples += one.samples
    warm = compare(rounds.warm, sides)
    return {name: (first[name], warm[name]) for name in sides}


def forget_migration(project: Path) -> Callable[[], None]:
    """Delete what ``make migration`` wrote, so every run generates the same file."""
    versions = project / "migrations" / "versions"
    committed = {path.name for path in versions.glob("*.py")}

    def prepare() -> None:
        for path in versions.glob("*.py"):
            if path.name not in committed:
                path.unlink()

    return prepare


def sql(url: URL, statement: str) -> str:
    """One statement on its own autocommitted connection; the first column of its row, if any."""
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        cursor = conn.execute(statement)
        row = cursor.fetchone() if cursor.description else None
    return str(row[0]) if row else ""


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# --- the series --------------------------------------------------------------


def check_rows(folders: dict[str, Path], admin: URL, at_head: URL, rounds: Rounds) -> dict[str, Row]:
    """`make check` on SQLite, HEAD and baseline; and what the scratch-PostgreSQL design pays per command."""
    scratch = at_head.set(database=f"{at_head.database}_s")
    empty = at_head.set(database=f"{at_head.database}_e")

    def drop(url: URL) -> Callable[[], None]:
        def prepare() -> None:
            sql(admin, f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)")

        return prepare

    def create_empty() -> None:
        drop(empty)()
        sql(admin, f"CREATE DATABASE {empty.database} OWNER {at_head.username}")

    def create_scratch() -> None:  # what each command would pay first: connect, copy the template
        sql(admin, f"CREATE DATABASE {scratch.database} TEMPLATE {at_head.database} OWNER {at_head.username}")

    try:
        # The copy runs next to the baseline, far from head-pg's connection to its template (it would wait).
        result = measure(
            folders.values(),
            rounds,
            {
                "baseline": (NOTHING, make(folders["baseline"], "check")),
                "scratch": (drop(scratch), create_scratch),
                "head": (NOTHING, make(folders["head"], "check")),
                "head-pg": (NOTHING, make(folders["head-pg"], "check", url=at_head)),
                "stale": (create_empty, make(folders["head-pg"], "upgrade", url=empty)),
            },
        )
    finally:
        drop(scratch)()
        drop(empty)()
    base = Row("`make check`", f"{BASELINE} (baseline), SQLite app.db at head", result["baseline"])
    head = Row("`make check`", "HEAD, SQLite app.db at head", result["head"], base, held=True)
    on_pg = Row("`make check`", f"HEAD, {ON_PG}", result["head-pg"], base)
    group = "scratch PostgreSQL"
    copy = Row(group, "a fresh database at head: `CREATE DATABASE … TEMPLATE`", result["scratch"], base)
    both = Row(group, "per command at least: `make check` on PostgreSQL + the fresh database", None, base)
    both.warm, both.first = on_pg.warm + copy.warm, on_pg.first + copy.first
    stale = "the template rebuilt after the migrations changed: `make upgrade` of an empty database"
    rebuild = Row(group, stale, result["stale"], base)
    return {
        "check": base,
        "check-head": head,
        "check-pg": on_pg,
        "copy": copy,
        "both": both,
        "rebuild": rebuild,
    }


def migration_rows(folders: dict[str, Path], at_head: URL, rounds: Rounds) -> dict[str, Row]:
    """`make migration` after one model edit, the generated file deleted between runs."""
    for folder in folders.values():
        model = folder / "models" / "user.py"
        text = model.read_text()
        assert EDIT[0] in text, f"{model}: the edit's anchor moved"
        model.write_text(text.replace(*EDIT, 1))
    msg = f"msg={MSG}"
    sides: Sides = {
        name: (
            forget_migration(folder),
            make(folder, "migration", msg, url=at_head if name == "head-pg" else None),
        )
        for name, folder in folders.items()
    }
    result = measure(folders.values(), rounds, sides)
    for prepare, _ in sides.values():
        prepare()
    group = "`make migration` (add a nullable column)"
    base = Row(group, f"{BASELINE} (baseline), against SQLite app.db", result["baseline"])
    return {
        "migration": base,
        "migration-head": Row(group, "HEAD, against SQLite app.db", result["head"], base, held=True),
        "migration-pg": Row(group, f"HEAD, {ON_PG}", result["head-pg"], base),
    }


def server_rows(project: Path, rounds: Rounds, peer: Row) -> dict[str, Row]:
    """A server's cold start and stop, as `python -m dbtools pgserver` (initdb, pg_ctl) does them."""
    if pgserver.bindir() is None:
        return {}
    python = [sys.executable, "-m", "dbtools", "pgserver"]
    where: list[Path] = []

    def fresh() -> None:
        for old in where:
            shutil.rmtree(old, ignore_errors=True)
        # Under /tmp itself, not a private temp folder: the server may run as another user.
        where[:] = [Path(tempfile.mkdtemp(prefix="pgserver-bench-"))]

    def run(action: str) -> Callable[[], None]:
        def step() -> None:  # stdout holds the admin URL with its password: captured, never shown
            subprocess.run([*python, action, str(where[0])], cwd=project, check=True, capture_output=True)

        return step

    try:
        sides: Sides = {"start": (fresh, run("start")), "stop": (NOTHING, run("stop"))}
        result = measure([project], rounds, sides)
    finally:
        for old in where:
            subprocess.run([*python, "stop", str(old)], cwd=project, check=False, capture_output=True)
            shutil.rmtree(old, ignore_errors=True)
    group = "scratch PostgreSQL"
    start = "a server's cold start: `python -m dbtools pgserver start` (initdb, start)"
    return {
        "start": Row(group, start, result["start"], peer, elsewhere=True),
        "stop": Row(
            group, "its stop: `python -m dbtools pgserver stop`", result["stop"], peer, elsewhere=True
        ),
    }


# --- results -------------------------------------------------------------------


def render(rows: list[Row], context: dict[str, str], rounds: Rounds) -> str:
    lines = [
        f"| command | side | first run (median of {rounds.first}) | warm (median of {rounds.warm}) "
        "| ratio warm | ratio first run | compared with |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        warm, first = row.warm / row.base.warm, row.first / row.base.first
        lines.append(
            f"| {row.group} | {row.what} | {_s(row.first)} | {_s(row.warm)} | {warm:.2f} | {first:.2f} "
            f"| {row.compared_with if row.peer else 'itself: the baseline'} |"
        )
    lines += ["", *(f"- {key}: {value}" for key, value in context.items())]
    return "\n".join(lines) + "\n"


def verdict(rows: list[Row]) -> str:
    """One line per command held to the bar: HEAD against the baseline, warm and first run."""
    said = []
    for row in rows:
        if row.held:
            warm, first = row.warm / row.base.warm, row.first / row.base.first
            held = "within" if max(warm, first) <= BAR else "OVER"
            said.append(
                f"- {row.group}: HEAD / {BASELINE} = {warm:.2f} warm, {first:.2f} first run: "
                f"{held} the {BAR}x bar."
            )
    return "\n".join(said)


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def document(table: str, rows: dict[str, Row], rounds: Rounds) -> str:
    """The results file: how to read it, the verdict, what the design not taken would cost, the table."""

    def costs(command: str) -> str:
        pg, base, head = (rows[f"{command}{side}"].warm for side in ("-pg", "", "-head"))
        return f"{pg / base:.2f}x the baseline's, {pg / head:.2f}x HEAD's against SQLite"

    start, stop = rows.get("start"), rows.get("stop")
    server = f"{_s(start.warm)} (its stop: {_s(stop.warm)})" if start and stop else "not measured, no initdb"
    return f"""# `make bench-autogenerate`: autogenerate's cost, HEAD against {BASELINE}

Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by `make bench-autogenerate` (bench/autogenerate.py).
Each row is the command a user runs (`make -s <target>` in a project folder, a
subprocess, start-up included). HEAD is a copy of the working tree; {BASELINE}, the
commit before the autogenerate-fidelity work (issue 23), is a temporary `git
worktree`; both use the same virtualenv. The sides of one series alternate
round by round, after one untimed run of each. *First run* is the median of
{rounds.first} rounds, each started by removing the projects' own `__pycache__` (as
after a checkout; the virtualenv's bytecode and the OS cache stay warm);
*warm* is the median of the {rounds.warm} rounds after them. Each ratio divides by
the row named in the last column, measured in the same series unless it says
otherwise. HEAD / {BASELINE} covers every commit since, not only the fidelity work.

{verdict(list(rows.values()))}

The design not taken, autogenerate against a warm scratch PostgreSQL at head
(HEAD's commands pointed at a PostgreSQL database at head), warm:

- `make migration`: {costs("migration")}
  (which reads the PostgreSQL-only facts from schema/postgresql.sql);
- `make check`: {costs("check")};
- a fresh copy of the database per command: + {_s(rows["copy"].warm)};
- the scratch's upgrade whenever the migrations change: {_s(rows["rebuild"].warm)} from empty with
  this project's one migration (it grows with the history);
- a server's cold start when none is warm: {server}.

{table}"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench-autogenerate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="warm rounds per series (at least 7)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args()
    if options.repeat < 7:
        parser.error("--repeat: at least 7")
    rounds = Rounds(options.repeat)
    context = {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    head = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=True,
    )
    context |= {"HEAD": head.stdout.strip(), "baseline": BASELINE, **machine()}
    context["load average at start"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with (
        tempfile.TemporaryDirectory(prefix="bench-autogenerate-") as base,
        projects(Path(base)) as folders,
        pgserver.server() as admin,
        pgserver.fresh_database(admin) as at_head,
    ):
        for name, folder in folders.items():
            make(folder, "upgrade", url=at_head if name == "head-pg" else None)()
        context["PostgreSQL"] = sql(admin, "SHOW server_version")
        print(f"make check, 1 + {rounds.first} + {rounds.warm} rounds ...", file=sys.stderr)
        rows = check_rows(folders, admin, at_head, rounds)
        print("make migration ...", file=sys.stderr)
        rows |= migration_rows(folders, at_head, rounds)
        print("PostgreSQL server start and stop ...", file=sys.stderr)
        rows |= server_rows(folders["head"], rounds, rows["check"])
    context["load average at end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    table = render(list(rows.values()), context, rounds)
    print(table)
    print(verdict(list(rows.values())))
    options.output.write_text(document(table, rows, rounds))
    print(f"Wrote {options.output}.")


if __name__ == "__main__":
    main()

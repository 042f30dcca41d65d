"""``make upgrade fleet=<file>`` (and ``make status fleet=``): one history, many databases, group by group.

The fleet file (TOML) lists groups, run in file order; each holds targets:
SQLite files (a URL or a glob, relative to the fleet file) and PostgreSQL
databases (a table whose password comes from the environment, and whose
``schemas`` make each tenant schema a target). The whole file is read,
checked and expanded into targets before anything runs; a mistake is one
``CommandError`` naming the key.

Each target's run is ``python -m dbtools upgrade`` itself (``run_one``, the
same ``main``), in a process forked from this one after the imports, with
``DATABASE_URL`` and ``MIGRATION_SCHEMA`` set for it: the same fast path,
lock, transaction, checksums, backups and retries as a single run, and the
same one-line failure. At most ``parallel`` run at once. A failure in a
group with ``on_error = "stop"``, or Ctrl-C, starts nothing more and lets
the running ones finish; a second Ctrl-C interrupts them (each rolls back).
``status`` runs the same way, looking only, and stops at nothing.
"""

from __future__ import annotations

import fnmatch
import gc
import glob
import importlib
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.util import CommandError

from dbtools.settings import DATABASE_URL_VAR, MAX_IDENTIFIER_BYTES, SCHEMA_VAR, quoted_schema

DEFAULT_PARALLEL = 4
MAX_PARALLEL = 256
ON_ERROR = ("stop", "continue")
GROUP_KEYS = {"name", "parallel", "on_error", "targets"}
TABLE_KEYS = {"url", "password_env", "schemas"}
GLOB_CHARS = "*["  # and not ?, which would start a URL's parameters


@dataclass(frozen=True)
class Target:
    """One database (or one tenant schema of one) to bring to the revision asked for."""

    group: str
    shown: str  # masked: no password, a SQLite file as the fleet file names it, #schema for a tenant
    url: str  # what DATABASE_URL gets: may hold the password, never printed
    schema: str | None = None
    sqlite_path: Path | None = None


@dataclass(frozen=True)
class Group:
    name: str
    parallel: int
    on_error: str
    targets: list[Target]


@dataclass
class Outcome:
    target: Target
    result: str = "not started"  # upgraded | current | failed | not started; status: pending
    before: str | None = None
    after: str | None = None
    seconds: float | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target.shown,
            "group": self.target.group,
            "from": self.before,
            "to": self.after,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "result": self.result,
            "reason": self.reason,
        }


@dataclass
class _Running:
    outcome: Outcome
    started: float
    log: Path
    facts: Path


# --- reading the fleet file ----------------------------------------------------------------


def load(path: Path) -> list[Group]:
    """Every group and target of the fleet file, checked and expanded, or one CommandError."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"fleet file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"fleet file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"group"})
    if unknown:
        raise CommandError(f"{path}: unknown key {unknown[0]!r}; a fleet file holds [[group]] tables only")
    groups = data.get("group")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise CommandError(f"{path}: no [[group]] tables; a fleet needs at least one group with targets")
    seen_files: set[Path] = set()
    seen_names: set[str] = set()
    seen_urls: set[tuple[str, str | None]] = set()
    result = []
    for number, raw in enumerate(groups, 1):
        group = _group(path, number, raw, seen_names)
        targets: list[Target] = []
        for index, entry in enumerate(raw["targets"]):
            where = f"{path}: group {number} ({group.name!r}), targets[{index}]"
            for target in _targets(path.parent, where, group.name, entry):
                if target.sqlite_path is not None:
                    if target.sqlite_path in seen_files:
                        continue  # named by an earlier group (the canary), or twice by a glob
                    seen_files.add(target.sqlite_path)
                else:
                    key = (target.shown, target.schema)
                    if key in seen_urls:
                        continue
                    seen_urls.add(key)
                targets.append(target)
        result.append(Group(group.name, group.parallel, group.on_error, targets))
    return result


def _group(path: Path, number: int, raw: dict[str, Any], seen: set[str]) -> Group:
    where = f"{path}: group {number}"
    unknown = sorted(set(raw) - GROUP_KEYS)
    if unknown:
        raise CommandError(
            f"{where}: unknown key {unknown[0]!r}; a group takes {', '.join(sorted(GROUP_KEYS))}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CommandError(f"{where}: name is missing or empty; give each group a name")
    if name in seen:
        raise CommandError(f"{where}: name {name!r} is used by an earlier group; names are unique")
    seen.add(name)
    where = f"{where} ({name!r})"
    parallel = raw.get("parallel", DEFAULT_PARALLEL)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise CommandError(f"{where}: parallel = {parallel!r} is not a whole number from 1 to {MAX_PARALLEL}")
    on_error = raw.get("on_error", "stop")
    if on_error not in ON_ERROR:
        raise CommandError(f'{where}: on_error = {on_error!r} is neither "stop" nor "continue"')
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets:
        raise CommandError(f"{where}: targets is missing or empty; list at least one database")
    return Group(name, parallel, on_error, [])


def _targets(base: Path, where: str, group: str, entry: object) -> list[Target]:
    if isinstance(entry, str):
        if entry.startswith("sqlite:"):
            return _sqlite_targets(base, where, group, entry)
        return _server_targets(where, group, {"url": entry})
    if isinstance(entry, dict):
        return _server_targets(where, group, entry)
    raise CommandError(
        f"{where}: {type(entry).__name__} is not a target; give a URL or a {{url = ...}} table"
    )


def _sqlite_targets(base: Path, where: str, group: str, url: str) -> list[Target]:
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise CommandError(f"{where}: {url!r} is not a SQLite file URL; write sqlite:///path/to/file.db")
    spelled = url[len("sqlite:///") :]
    if "?" in spelled or spelled.startswith("file:"):
        raise CommandError(
            f"{where}: {url!r}: a fleet's SQLite target is a file path or a glob, without parameters"
        )
    absolute = Path(spelled) if Path(spelled).is_absolute() else base / spelled
    if any(char in spelled for char in GLOB_CHARS):
        pattern = spelled if Path(spelled).is_absolute() else os.path.join(glob.escape(str(base)), spelled)
        paths = sorted(Path(found) for found in glob.glob(pattern) if Path(found).is_file())
        if not paths:
            raise CommandError(f"{where}: {url!r} matches no file (relative to {base})")
    else:
        paths = [absolute]
    return [
        Target(
            group, "sqlite:///" + _shown_path(path, base), f"sqlite:///{path.resolve()}", None, path.resolve()
        )
        for path in paths
    ]


def _shown_path(path: Path, base: Path) -> str:
    """A file as the fleet file would name it: relative to the fleet file when it is beneath it."""
    with suppress(ValueError):
        return str(path.resolve().relative_to(base.resolve()))
    return str(path.resolve())


def _server_targets(where: str, group: str, entry: dict[str, Any]) -> list[Target]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    unknown = sorted(set(entry) - TABLE_KEYS)
    if unknown:
        raise CommandError(
            f"{where}: unknown key {unknown[0]!r}; a target table takes url, password_env, schemas"
        )
    raw = entry.get("url")
    if not isinstance(raw, str) or not raw:
        raise CommandError(f"{where}: url is missing; give the database URL without its password")
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        url = None
    if url is None or "@" in (url.host or ""):  # never echoed: it may hold a password
        raise CommandError(f"{where}: url is not a valid database URL")
    if url.password is not None:
        raise CommandError(
            f"{where}: url holds a password, which a fleet file must not; nothing was run. "
            "Remove it and name an environment variable holding it with password_env"
        )
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() != "postgresql":
        raise CommandError(
            f"{where}: {url.render_as_string(hide_password=True)!r} is neither a SQLite file nor PostgreSQL"
        )
    password_env = entry.get("password_env")
    if password_env is not None:
        if not isinstance(password_env, str) or not password_env:
            raise CommandError(f"{where}: password_env is not the name of an environment variable")
        if password_env not in os.environ:
            raise CommandError(
                f"{where}: password_env names {password_env}, which is not set; nothing was run"
            )
        url = url.set(password=os.environ[password_env])
    shown = url.render_as_string(hide_password=True)
    full = url.render_as_string(hide_password=False)
    schemas = entry.get("schemas")
    if schemas is None:
        return [Target(group, shown, full)]
    patterns = [schemas] if isinstance(schemas, str) else schemas
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise CommandError(f"{where}: schemas is neither a schema name, a list of them, nor a * pattern")
    for pattern in patterns:
        _check_pattern(where, pattern)
    names: list[str] = []
    existing = _schemas(where, full, shown) if any("*" in p for p in patterns) else []
    for pattern in patterns:
        matched = (
            sorted(n for n in existing if fnmatch.fnmatchcase(n, pattern)) if "*" in pattern else [pattern]
        )
        if not matched:
            raise CommandError(f"{where}: schemas {pattern!r} matches no schema in {shown}")
        names.extend(n for n in matched if n not in names)
    return [Target(group, f"{shown}#{name}", full, name) for name in names]


def _check_pattern(where: str, pattern: str) -> None:
    name = pattern.replace("*", "")
    if (
        not pattern
        or not pattern.isascii()
        or not all(c.isalnum() or c == "_" for c in name)
        or pattern[0].isdigit()
        or len(pattern.encode()) > MAX_IDENTIFIER_BYTES
        or ("*" not in pattern and pattern.lower().startswith("pg_"))
    ):
        raise CommandError(
            f"{where}: schemas {pattern!r} is not a schema name (ASCII letters, digits and _, "
            "not first a digit, not pg_*) nor such a name with * in it"
        )


def _schemas(where: str, url: str, shown: str) -> list[str]:
    """The database's own schemas (PostgreSQL's aside), in one query on one connection."""
    from sqlalchemy import create_engine, pool, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT nspname FROM pg_namespace "
                    "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
                )
            ).all()
    except SQLAlchemyError as exc:
        password = engine.url.password
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if password:
            reason = reason.replace(str(password), "***")
        raise CommandError(
            f"{where}: cannot list the schemas of {shown}: {reason}; nothing was run"
        ) from None
    finally:
        engine.dispose()
    return [name for (name,) in rows]


# --- running ----------------------------------------------------------------------------------


def run(
    fleet: Path,
    argv: Sequence[str],
    run_one: Callable[[list[str]], int],
    report: Path | None = None,
    out: Any = None,
) -> list[Outcome]:
    """Run ``argv`` (an ``upgrade`` or ``status`` command line) on every target, group by group.

    Raises a CommandError (after printing the table and writing the report) if any target failed
    or the fleet was interrupted. ``status`` only looks, so a failure stops nothing, and each
    target is ``current`` or ``pending`` against the history's heads.
    """
    out = out or sys.stdout
    looking = argv[0] == "status"
    if os.environ.get(SCHEMA_VAR):
        raise CommandError(
            f"{SCHEMA_VAR} is set, and a fleet names its tenant schemas itself; nothing was run. "
            "Unset it, and give them with schemas = ... in the fleet file"
        )
    if report is not None and not report.resolve().parent.is_dir():
        raise CommandError(f"report={report}: its folder does not exist; nothing was run")
    groups = load(fleet)
    if any(target.sqlite_path is None for group in groups for target in group.targets):
        for module in ("psycopg", "sqlalchemy.dialects.postgresql.psycopg"):
            importlib.import_module(module)  # once here, not in every forked run
    heads = _heads() if looking else None
    outcomes = [Outcome(target) for group in groups for target in group.targets]
    by_target = {id(o.target): o for o in outcomes}
    number = {id(o): str(index) for index, o in enumerate(outcomes)}  # each run's log file
    total = len(outcomes)
    running: dict[int, _Running] = {}
    interrupts = 0

    def interrupted(_signum: int, _frame: object) -> None:
        """Ctrl-C: start nothing more; a second one interrupts the running targets (each rolls back)."""
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            for pid in running:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        with tempfile.TemporaryDirectory(prefix="dbtools-fleet-") as scratch:
            stopped = ""  # why nothing more starts
            for group in groups:
                pending = [by_target[id(t)] for t in group.targets]
                while True:
                    if interrupts and not stopped:
                        stopped = "not started: the fleet was interrupted (Ctrl-C)"
                    while pending and not stopped and len(running) < group.parallel:
                        outcome = pending.pop(0)
                        pid, started = _start(outcome, Path(scratch) / number[id(outcome)], argv, run_one)
                        running[pid] = started
                    if not running:
                        break
                    pid, status = os.waitpid(-1, 0)  # retried after the handler above (PEP 475)
                    ended = running.pop(pid, None)
                    if ended is None:
                        continue  # not one of ours
                    outcome = _finish(ended, os.waitstatus_to_exitcode(status), heads)
                    if (
                        outcome.result == "failed"
                        and group.on_error == "stop"
                        and not looking
                        and not stopped
                    ):
                        stopped = (
                            f"not started: {outcome.target.shown} failed in group {group.name!r} "
                            '(on_error = "stop")'
                        )
                    _progress(outcome, outcomes, len(running), total)
                for outcome in pending:
                    outcome.reason = stopped
    finally:
        signal.signal(signal.SIGINT, previous)
    print(table(outcomes), file=out)
    if report is not None:
        write_report(report, outcomes)
    failed = [o for o in outcomes if o.result == "failed"]
    if failed or interrupts:
        left = sum(o.result == "not started" for o in outcomes)
        what = f"{len(failed)} of {total} targets failed" if failed else "interrupted"
        if looking:
            raise CommandError(f"fleet {fleet}: {what}, {left} not looked at (see the table)")
        raise CommandError(
            f"fleet {fleet}: {what}, {left} not started; each target is at its old revision or its new "
            "one (see the table). Run it again to pick up the rest"
        )
    return outcomes


def _start(
    outcome: Outcome, stem: Path, argv: Sequence[str], run_one: Callable[[list[str]], int]
) -> tuple[int, _Running]:
    target = outcome.target
    log, facts = stem.with_suffix(".log"), stem.with_suffix(".json")
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the target's own run; never returns
        _child(target, log, facts, argv, run_one)
    with suppress(OSError):
        os.setpgid(pid, pid)  # as the child does first: whichever runs first, no Ctrl-C slips in between
    return pid, _Running(outcome, started, log, facts)


def _child(
    target: Target, log: Path, facts: Path, argv: Sequence[str], run_one: Callable[[list[str]], int]
) -> None:
    code = 1
    try:
        gc.freeze()  # what the fleet imported stays shared with it, never scanned here
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a run's own Ctrl-C handling, as alone
        os.setpgid(0, 0)  # a Ctrl-C on the terminal reaches the fleet, which decides
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
        os.environ[DATABASE_URL_VAR] = target.url
        if target.schema:
            os.environ[SCHEMA_VAR] = target.schema
        else:
            os.environ.pop(SCHEMA_VAR, None)
        before = revision(target)
        code = run_one(list(argv))
        after = revision(target)
        facts.write_text(json.dumps({"from": before, "to": after}))
    except BaseException:  # not main's to catch: the log's last line is this target's reason
        traceback.print_exc()
    finally:
        with suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def revision(target: Target) -> str | None:
    """The target's revision(s) as ``alembic_version`` holds them, comma-joined; None for none or unknown.

    Looking only: a missing SQLite file is not created, a missing schema is not an error.
    """
    try:
        if target.sqlite_path is not None:
            if not target.sqlite_path.exists():
                return None
            uri = target.sqlite_path.as_uri() + "?mode=ro"
            with closing(sqlite3.connect(uri, uri=True)) as db:
                rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
        else:
            from sqlalchemy import create_engine, pool, text

            table = f"{quoted_schema(target.schema)}.alembic_version" if target.schema else "alembic_version"
            engine = create_engine(target.url, poolclass=pool.NullPool)
            try:
                with engine.connect() as conn:
                    found = conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar()
                    rows = list(conn.execute(text(f"SELECT version_num FROM {table}"))) if found else []
            finally:
                engine.dispose()
    except Exception:  # unreadable: the run says why
        return None
    return ",".join(sorted(str(row[0]) for row in rows)) or None


def _heads() -> str:
    """The history's head revisions, as ``revision`` joins a database's."""
    from alembic.script import ScriptDirectory

    from dbtools.paths import alembic_config

    return ",".join(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def _finish(job: _Running, code: int, heads: str | None) -> Outcome:
    """What the run said: ``heads`` given (``status``), whether the target is at them."""
    outcome = job.outcome
    outcome.seconds = time.monotonic() - job.started
    try:
        facts = json.loads(job.facts.read_text())
        outcome.before, outcome.after = facts["from"], facts["to"]
    except (OSError, ValueError, KeyError):
        outcome.before = outcome.after = revision(outcome.target)
    lines: list[str] = []
    with suppress(OSError):
        lines = job.log.read_text(encoding="utf-8", errors="replace").splitlines()
    if code == 0 and heads is not None:
        outcome.after = heads
        outcome.result = "current" if outcome.before == heads else "pending"
        # make status's summary: "1 applied, 0 pending; current: ...; checksums: ...; models: ..."
        outcome.reason = next((line for line in reversed(lines) if " applied, " in line), "")
        return outcome
    if code == 0:
        outcome.result = "current" if outcome.before == outcome.after else "upgraded"
        return outcome
    outcome.result = "failed"
    if lines:
        said = [line.partition(":")[2].strip() for line in lines if line.startswith("FAILED:")]
        # main's one FAILED line; else (a crash) the last line of the traceback
        outcome.reason = said[-1] if said else next((line for line in reversed(lines) if line.strip()), "")
    outcome.reason = outcome.reason or f"exit status {code}"
    return outcome


def _progress(outcome: Outcome, outcomes: list[Outcome], running: int, total: int) -> None:
    done = sum(o.result in ("upgraded", "current", "pending") for o in outcomes)
    failed = sum(o.result == "failed" for o in outcomes)
    left = total - done - failed - running
    what = outcome.result + (f": {outcome.reason}" if outcome.reason else "")
    print(
        f"[{done} done, {running} running, {failed} failed, {left} left] "
        f"{outcome.target.shown}: {what} ({outcome.seconds or 0:.2f} s)",
        file=sys.stderr,
        flush=True,
    )


# --- the report ----------------------------------------------------------------------------------

COLUMNS = ("target", "group", "from", "to", "seconds", "result", "reason")


def table(outcomes: list[Outcome]) -> str:
    """The fleet's outcome as a plain-text table, a row per target."""
    rows = [COLUMNS] + [
        (
            o.target.shown,
            o.target.group,
            o.before or "-",
            o.after or "-",
            "-" if o.seconds is None else f"{o.seconds:.2f}",
            o.result,
            o.reason,
        )
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ).rstrip()


def write_report(path: Path, outcomes: list[Outcome]) -> None:
    """The JSON report, written whole or not at all."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps({"targets": [o.as_json() for o in outcomes]}, indent=1) + "\n")
        os.replace(partial, path)
    except OSError as exc:
        with suppress(OSError):
            partial.unlink()
        raise CommandError(f"report={path} cannot be written: {exc.strerror}") from None

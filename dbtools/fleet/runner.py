"""One command on every target of a fleet, group by group: each target's run forked from here.

Each target's run is ``python -m dbtools <command>`` itself (``run_one``, the
same ``main``), in a process forked from this one after the imports, with
``DATABASE_URL`` and ``MIGRATION_SCHEMA`` set for it: the same fast path,
lock, transaction, checksums, backups and retries as a single run, and the
same one-line failure. At most ``parallel`` run at once. A failure in a
group with ``on_error = "stop"``, or Ctrl-C, starts nothing more and lets
the running ones finish; a second Ctrl-C interrupts them (each rolls back).
``status``, ``check`` and ``verify`` run the same way, looking only, and stop
at nothing.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TextIO

from dbtools.fleet import current, progress, servers
from dbtools.fleet.errors import FleetError
from dbtools.fleet.fleetfile import OnError, load
from dbtools.fleet.report import Outcome, Result, show, write_report
from dbtools.fleet.targets import Target
from dbtools.settings import DATABASE_URL_VAR, SCHEMA_VAR, quoted_schema

# A logging line of a run (Alembic's format): not what the run says of the target.
LOG_LINE = re.compile(r"^[A-Z]+ +\[")
# make status's summary line ("2 applied, 1 pending; current: ..."), not the lines after it: the
# window between expand and contract ("... is applied, its contract is not; ...") says " applied, " too.
STATUS_SUMMARY = re.compile(r"^(?:\d+ applied, \d+ pending|applied and pending unknown:)")


class Kind(StrEnum):
    """The commands a fleet runs; only ``upgrade`` changes anything, so only it stops on an error."""

    UPGRADE = "upgrade"
    STATUS = "status"
    CHECK = "check"
    VERIFY = "verify"


@dataclass
class _Running:
    outcome: Outcome
    started: float
    log: Path
    facts: Path


def run(
    fleet: Path,
    argv: Sequence[str],
    run_one: Callable[[list[str]], int],
    report: Path | None = None,
    out: TextIO | None = None,
    warm: Callable[[], object] = lambda: None,
) -> list[Outcome]:
    """Run ``argv`` (an ``upgrade``, ``status``, ``check`` or ``verify`` command line) on every target.

    Raises a FleetError (after printing the table and writing the report) if any target failed
    or the fleet was interrupted. Only ``upgrade`` stops on a failure (``on_error``); ``status``
    reports each target ``current`` or ``pending`` against the history's heads. ``warm``
    imports what each run would, once, before the first run is forked.
    """
    out = out or sys.stdout
    kind = Kind(argv[0])
    if os.environ.get(SCHEMA_VAR):
        raise FleetError(
            f"{SCHEMA_VAR} is set, and a fleet names its tenant schemas itself; nothing was run. "
            "Unset it, and give them with schemas = ... in the fleet file"
        )
    if report is not None and not report.resolve().parent.is_dir():
        raise FleetError(f"report={report}: its folder does not exist; nothing was run")
    try:
        groups = load(fleet)
        heads = _heads() if kind is Kind.STATUS else None
    except BaseException:
        servers.close_kept()  # nothing runs: the listing's connection is not needed
        raise
    on_servers = any(target.server is not None for group in groups for target in group.targets)
    # An upgrade to head may find targets there already, without a run each (fleet.current).
    # At head is at head for phase=expand too: a database with a contract pending is not at head.
    looks_first = kind is Kind.UPGRADE and [word for word in argv[1:] if word != "--phase=expand"] in (
        [],
        ["head"],
    )
    warmed = False
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
        with ExitStack() as scratch_folder, progress.view(total) as shown:
            scratch = Path()  # each run's log and facts: a temporary folder, made when the first run starts
            stopped = ""  # why nothing more starts
            for group in groups:
                pending = [by_target[id(t)] for t in group.targets]
                if looks_first and pending and not stopped and not interrupts:
                    pending = _answered(pending, outcomes, shown, group.parallel)
                while True:
                    if interrupts and not stopped:
                        stopped = "not started: the fleet was interrupted (Ctrl-C)"
                    while pending and not stopped and len(running) < group.parallel:
                        if not warmed:  # the first run: what a fleet at head never needs
                            import tempfile

                            servers.close_kept()  # no run shares the fleet's own connection
                            warm()
                            if on_servers:  # once here, not in every forked run (0.1 s each)
                                for module in ("psycopg", "sqlalchemy.dialects.postgresql.psycopg"):
                                    importlib.import_module(module)  # the dialect imports psycopg lazily
                            warmed = True
                            made = tempfile.TemporaryDirectory(prefix="dbtools-fleet-")
                            scratch = Path(scratch_folder.enter_context(made))
                        outcome = pending.pop(0)
                        pid, started = _start(outcome, scratch / number[id(outcome)], argv, run_one)
                        running[pid] = started
                        shown.changed(progress.Counts.of(outcomes, len(running)))
                    if not running:
                        break
                    pid, status = os.waitpid(-1, 0)  # retried after the handler above (PEP 475)
                    ended = running.pop(pid, None)
                    if ended is None:
                        continue  # not one of ours
                    outcome = _finish(kind, ended, os.waitstatus_to_exitcode(status), heads)
                    if (
                        outcome.result is Result.FAILED
                        and group.on_error is OnError.STOP
                        and kind is Kind.UPGRADE
                        and not stopped
                    ):
                        stopped = (
                            f"not started: {outcome.target.shown} failed in group {group.name!r} "
                            '(on_error = "stop")'
                        )
                    shown.finished(outcome, progress.Counts.of(outcomes, len(running)))
                for outcome in pending:
                    outcome.reason = stopped
    finally:
        signal.signal(signal.SIGINT, previous)
        servers.close_kept()
    show(outcomes, out)
    if report is not None:
        write_report(report, outcomes)
    failed = [o for o in outcomes if o.result is Result.FAILED]
    if failed or interrupts:
        left = sum(o.result is Result.NOT_STARTED for o in outcomes)
        what = f"{len(failed)} of {total} targets failed" if failed else "interrupted"
        if kind is not Kind.UPGRADE:
            raise FleetError(f"fleet {fleet}: {what}, {left} not looked at (see the table)")
        raise FleetError(
            f"fleet {fleet}: {what}, {left} not started; each target is at its old revision or its new "
            "one (see the table). Run it again to pick up the rest"
        )
    return outcomes


def _answered(
    pending: list[Outcome], outcomes: list[Outcome], shown: progress.View, parallel: int
) -> list[Outcome]:
    """Mark the targets already at head ``current``, as their no-op runs would; the rest still to run."""
    started = time.monotonic()
    found, heads = current.at_head((o.target for o in pending), parallel)
    seconds = time.monotonic() - started  # one look answered them together
    before = progress.Counts.of(outcomes, 0)
    answered = [o for o in pending if o.target in found]
    for outcome in answered:
        outcome.result, outcome.before, outcome.after = Result.CURRENT, heads, heads
        outcome.seconds = seconds
        sqlite = outcome.target.sqlite_path is not None
        outcome.reason = current.SQLITE_REASON if sqlite else current.POSTGRESQL_REASON
    if answered:
        shown.answered(answered, before)
    return [o for o in pending if o.target not in found]


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
        code, before, after = _run_and_see(target, argv, run_one)
        facts.write_text(json.dumps({"from": before, "to": after}))
    except BaseException:  # not main's to catch: the log's last line is this target's reason
        import traceback

        traceback.print_exc()
    finally:
        with suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run_and_see(
    target: Target, argv: Sequence[str], run_one: Callable[[list[str]], int]
) -> tuple[int, str | None, str | None]:
    """Run the command: its exit status, and where it took the database, as the run saw it when it can say.

    A run that migrated says where it started and ended (``dbtools.run.StepTimer``):
    two connections fewer for each target, each a backend's start and a password
    exchange on PostgreSQL. Otherwise (a run refused before migrating, or one that
    failed after committing a step) the database is read: its revision now is the
    one to report, and, if the run never started migrating, the one before it too.
    """
    from dbtools import run as runs

    runs.forget_started()
    code = run_one(list(argv))
    started = runs.last_started()
    if argv[0] != Kind.UPGRADE:
        now = revision(target) if started is None else _joined(started.before)
        return code, now, now
    if code == 0 and started is not None:
        return code, _joined(started.before), _joined(started.after)
    now = revision(target)
    return code, (now if started is None else _joined(started.before)), now


def _joined(heads: Sequence[str]) -> str | None:
    return ",".join(sorted(heads)) or None


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
            assert target.server is not None
            table = f"{quoted_schema(target.schema)}.alembic_version" if target.schema else "alembic_version"
            with servers.connected(target.server) as conn:
                ((found,),) = conn.rows("SELECT CAST(to_regclass($1) AS text)", [table])
                rows = conn.rows(f"SELECT version_num FROM {table}") if found else []
    except Exception:  # unreadable: the run says why
        return None
    return ",".join(sorted(str(row[0]) for row in rows)) or None


def _heads() -> str:
    """The history's head revisions, as ``revision`` joins a database's: from the record the look at
    head keeps (``current.load_history``), so Alembic reads the migration files only after a change."""
    from dbtools.runtime.fastpath import Checkout

    history = None
    with suppress(Exception):  # a file unreadable here: Alembic's own graph says what it can
        history = current.load_history(Checkout.now())
    if history is not None:
        return history.joined
    from alembic.script import ScriptDirectory

    from dbtools.paths import alembic_config

    return ",".join(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def _finish(kind: Kind, job: _Running, code: int, heads: str | None) -> Outcome:
    """What the run said: for ``status`` (``heads`` given), whether the target is at them."""
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
    if code != 0:
        outcome.result = Result.FAILED
        said = [line.partition(":")[2].strip() for line in lines if line.startswith("FAILED:")]
        # main's one FAILED line; else (a crash) the last line of the traceback
        outcome.reason = said[-1] if said else next((line for line in reversed(lines) if line.strip()), "")
        outcome.reason = outcome.reason or f"exit status {code}"
    elif kind is Kind.UPGRADE:
        outcome.result = Result.CURRENT if outcome.before == outcome.after else Result.UPGRADED
    elif kind is Kind.STATUS:
        outcome.after = heads
        outcome.result = Result.CURRENT if outcome.before == heads else Result.PENDING
        # make status's summary: "1 applied, 0 pending; current: ...; checksums: ...; models: ..."
        outcome.reason = next((line for line in reversed(lines) if STATUS_SUMMARY.match(line)), "")
    else:  # check, verify: what the command said of the target, its logging aside
        outcome.result = Result.OK
        outcome.reason = next(
            (line for line in reversed(lines) if line.strip() and not LOG_LINE.match(line)), ""
        )
    return outcome

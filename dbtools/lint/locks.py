"""``make lint``'s lock review: each revision's PostgreSQL SQL, on its own, through squawk.

squawk (https://squawkhq.com) knows which statement takes which lock for how
long. It must see one revision at a time: in one file covering the whole
history, every table counts as created in that file, and creating a table
locks nobody out, so most rules would stay silent. Each revision is rendered
offline (``alembic upgrade <down>:<rev> --sql``) against PostgreSQL, whatever
``DATABASE_URL`` says: the same migrations must be safe there.

Which rules the project enforces, and why, is in ``.squawk.toml``. A few
statements squawk has no rule for (``LOCK TABLE``, ``VACUUM FULL``,
``CLUSTER``, ``SET TABLESPACE``) are the project's own rules (``own_hazards``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import make_url

from dbtools import settings
from dbtools.lint import phases
from dbtools.lint.sqltext import statements
from dbtools.paths import root_of
from dbtools.run import Run
from dbtools.target import Target

SQUAWK_VAR = "SQUAWK"
# How long make lint waits for squawk before it counts as broken and is stopped.
SQUAWK_TIMEOUT_VAR, SQUAWK_TIMEOUT = "SQUAWK_TIMEOUT", 60.0
CONFIG_FILE = ".squawk.toml"
# squawk 2.70 counts every statement after a file's first COMMIT as outside a
# transaction, even inside a later BEGIN ... COMMIT (as Alembic renders what
# follows an autocommit_block()); this rule is re-checked here (_outside_transaction).
ROBUST = "prefer-robust-stmts"
# A revision whose SQL cannot be rendered offline (its upgrade() reads rows
# through op.get_bind()) is not reviewed: a hazard of its own, acknowledgeable.
NOT_RENDERED = "not-rendered"
RENDER_HELP = (
    "Its locks cannot be reviewed: make upgrade() work with `make sql` (op.execute() rather than reading "
    'through op.get_bind()), or review it by hand: acknowledge_locking = {"not-rendered": "<reason>"}.'
)
# Offline rendering connects to nothing: only the dialect matters.
RENDER_URL = make_url("postgresql+psycopg://lint@localhost/lint")

# Statements squawk 2.70 has no rule for, that keep a table locked for as long
# as they run (or, LOCK TABLE, until the run's transaction ends). The project's
# own rules, acknowledged like squawk's: acknowledge_locking = {"<rule>": "<reason>"}.
LOCK_TABLE = re.compile(r"^LOCK\s+(?:TABLE\s+)?.*?(?:\s+IN\s+(.+?)\s+MODE)?(?:\s+NOWAIT)?$", re.I)
# The modes that conflict with ROW EXCLUSIVE, the lock every INSERT, UPDATE and DELETE takes.
BLOCKS_WRITES = {"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}
VACUUM = re.compile(
    r"^VACUUM\s*(?:\((?P<options>[^)]*)\)|(?P<words>(?:\s*\b(?:FULL|FREEZE|VERBOSE|ANALY[SZ]E)\b)*))", re.I
)
CLUSTER = re.compile(r"^CLUSTER\b", re.I)
SET_TABLESPACE = re.compile(r"^ALTER\s+(?:TABLE|INDEX|MATERIALIZED\s+VIEW)\b.*\bSET\s+TABLESPACE\b", re.I)
REWRITES_UNDER_LOCK = "under an ACCESS EXCLUSIVE lock: reads and writes of the table wait for all of it."


@dataclass(frozen=True)
class Hazard:
    path: Path
    rule: str
    message: str
    help: str
    statement: str

    def __str__(self) -> str:
        shown = self.path.relative_to(Path.cwd()) if self.path.is_relative_to(Path.cwd()) else self.path
        advice = f" {self.help}" if self.help else ""
        return f"{shown}: {self.rule}: {self.message}{advice} In: {self.statement}"


def squawk_binary() -> str:
    """``SQUAWK`` if set, else the one squawk-cli installed beside this Python."""
    return os.environ.get(SQUAWK_VAR) or str(Path(sysconfig.get_path("scripts")) / "squawk")


def squawk_timeout() -> float:
    """``SQUAWK_TIMEOUT`` in seconds, validated as every timeout setting is; 60 when unset.

    Read here, not listed in ``settings.NAMES``: only ``make lint`` reads it, and
    a migration run's answer (the fast path's key) never depends on it.
    """
    return settings.seconds(SQUAWK_TIMEOUT_VAR, SQUAWK_TIMEOUT)


def review(config: Config, paths: Iterable[Path]) -> tuple[list[Hazard], set[Path]]:
    """squawk's findings for the revisions in ``paths``, each rendered on its own; and which were."""
    script = ScriptDirectory.from_config(config)
    files = list(paths)
    wanted = {path.resolve() for path in files}
    revisions = [rev for rev in script.walk_revisions() if Path(str(rev.path)).resolve() in wanted]
    reviewed = {Path(str(rev.path)).resolve() for rev in revisions}
    with tempfile.TemporaryDirectory(prefix="dbtools-lint-") as folder:
        rendered: dict[str, tuple[Path, list[str]]] = {}
        hazards = []
        for revision in revisions:
            try:
                sql = render(config, revision)
            except Exception as exc:  # any failure of a user's migration
                path = Path(str(revision.path)).resolve()
                hazards.append(
                    Hazard(path, NOT_RENDERED, f"{type(exc).__name__}: {exc}.", RENDER_HELP, "upgrade()")
                )
                continue
            path = Path(str(revision.path)).resolve()
            hazards += own_hazards(path, sql)
            hazards += [
                Hazard(path, found.rule, found.message, found.help, found.statement)
                for found in phases.findings(path, sql, files)
            ]
            target = Path(folder) / f"{revision.revision}.sql"
            target.write_text(sql)
            rendered[str(target)] = (Path(str(revision.path)), sql.splitlines())
        if not rendered:
            return hazards, reviewed
        findings = run_squawk(list(rendered), root_of(config) / CONFIG_FILE)
    for finding in findings:
        path, lines = rendered[finding.file]
        line = finding.line
        statement = " ".join(lines[line].split()) if 0 <= line < len(lines) else "?"
        if finding.rule == ROBUST and not _outside_transaction(lines, line, statement):
            continue
        hazards.append(Hazard(path.resolve(), finding.rule, finding.message, finding.help, statement))
    return hazards, reviewed


def own_hazards(path: Path, sql: str) -> list[Hazard]:
    """What the project's own rules find in one revision's rendered SQL (``LOCK_TABLE`` and below)."""
    found = []
    for statement in statements(sql):
        hazard = _own_rule(statement)
        if hazard is not None:
            rule, message, advice = hazard
            found.append(Hazard(path, rule, message, advice, f"{statement};"))
    return found


def _own_rule(statement: str) -> tuple[str, str, str] | None:
    """(rule, message, help) for a statement that holds a table's lock for long, or None."""
    if (locked := LOCK_TABLE.match(statement)) is not None:
        mode = " ".join((locked[1] or "ACCESS EXCLUSIVE").upper().split())
        if mode not in BLOCKS_WRITES:
            return None
        blocked = "reads and writes" if mode == "ACCESS EXCLUSIVE" else "writes"
        return (
            "lock-table",
            f"LOCK TABLE in {mode} mode blocks {blocked} of the table until the run's transaction ends.",
            "Each statement takes the lock it needs, and the lock timeout bounds its wait: take no more.",
        )
    if (vacuum := VACUUM.match(statement)) is not None and _full(vacuum["options"], vacuum["words"]):
        return (
            "vacuum-full",
            f"VACUUM FULL rewrites the table {REWRITES_UNDER_LOCK}",
            "A plain VACUUM takes no such lock; pg_repack compacts a table online.",
        )
    if CLUSTER.match(statement):
        return (
            "cluster",
            f"CLUSTER rewrites the table in index order {REWRITES_UNDER_LOCK}",
            "pg_repack reorders a table online.",
        )
    if SET_TABLESPACE.match(statement):
        return (
            "set-tablespace",
            f"SET TABLESPACE copies the table or index to the new tablespace {REWRITES_UNDER_LOCK}",
            "pg_repack moves a table online; or move it in a maintenance window.",
        )
    return None


def _full(options: str | None, words: str | None) -> bool:
    """Whether VACUUM's options, ``(FULL, ANALYZE)`` or the old ``FULL ANALYZE``, ask for FULL."""
    if options is not None:
        for option in options.split(","):
            name, _, value = option.strip().partition(" ")
            if name.upper() == "FULL" and value.strip().lower() not in ("false", "off", "0"):
                return True
        return False
    return "FULL" in (words or "").upper().split()


def _outside_transaction(lines: list[str], line: int, statement: str) -> bool:
    """Whether a re-run could trip on this statement: it runs on its own, and is not idempotent.

    Alembic renders transaction control as lines of their own. ``VALIDATE
    CONSTRAINT`` does nothing the second time, whatever squawk assumes.
    """
    inside = False
    for text in lines[:line]:
        if text.strip() in ("BEGIN;", "COMMIT;"):
            inside = text.strip() == "BEGIN;"
    return not inside and " VALIDATE CONSTRAINT " not in f" {statement.upper()} "


def render(config: Config, revision: Script) -> str:
    """The PostgreSQL SQL ``make sql`` would print for this one revision."""
    down = revision.down_revision
    start = down[0] if isinstance(down, tuple) else down  # a merge: from its first parent
    target = f"{start}:{revision.revision}" if start else revision.revision
    buffer = io.StringIO()
    own = Config(config.config_file_name, output_buffer=buffer)
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # env.py's per-run INFO lines, once per revision
    try:
        command.upgrade(
            Run(target=Target.of(RENDER_URL), needs_models=False).start_with(own), target, sql=True
        )
    finally:
        logging.disable(previous)
    return buffer.getvalue()


@dataclass(frozen=True)
class Finding:
    """One entry of squawk's JSON report, its keys checked."""

    file: str
    line: int
    rule: str
    message: str
    help: str


def run_squawk(files: list[str], config_file: Path) -> list[Finding]:
    """squawk's findings in ``files``; any way squawk can fail is one ``CommandError``, never a traceback."""
    binary = squawk_binary()
    limit = squawk_timeout()
    argv = [binary, "--reporter", "json", "--config", str(config_file), *files]
    broken = "so no migration was reviewed for locks; fix or reinstall it (make clean install)"
    try:
        returncode, stdout, stderr = _run(argv, limit)
    except OSError as exc:
        raise CommandError(
            f"cannot run squawk, the PostgreSQL lock linter, at {binary} ({exc.strerror}), so no migration "
            f"was reviewed for locks; run `make install` (squawk-cli is in requirements-dev.txt), "
            f"or point {SQUAWK_VAR} at a squawk binary"
        ) from None
    except subprocess.TimeoutExpired:
        raise CommandError(
            f"squawk at {binary} had not finished after {SQUAWK_TIMEOUT_VAR}={limit:g}s and was stopped, "
            f"with what it started, {broken}, or raise {SQUAWK_TIMEOUT_VAR}"
        ) from None
    try:
        report = json.loads(stdout) if returncode in (0, 1) else None
    except ValueError:
        report = None
    if not isinstance(report, list):
        said = (stderr.strip() or stdout.strip() or "no output").splitlines()[0]
        raise CommandError(f"squawk at {binary} failed (exit status {returncode}: {said}), {broken}")
    findings = []
    for entry in report:
        finding = _finding(entry, files)
        if finding is None:
            shown = json.dumps(entry)
            shown = shown if len(shown) <= 100 else f"{shown[:100]}..."
            raise CommandError(
                f"squawk at {binary} reported a finding without a known file, a line, a rule_name and a "
                f"message ({shown}), {broken}"
            )
        findings.append(finding)
    return findings


def _run(argv: list[str], limit: float) -> tuple[int, str, str]:
    """Run ``argv`` for at most ``limit`` seconds, in a process group of its own.

    Past the limit, or on Ctrl-C, the whole group is killed: a wrapper script's
    children too, which killing only the program itself would leave running.
    """
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=limit)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise
    return process.returncode, stdout, stderr


def _finding(entry: object, files: list[str]) -> Finding | None:
    """``entry`` as a Finding, or None when squawk's report lacks what the review reads."""
    if not isinstance(entry, dict):
        return None
    file, line, rule = entry.get("file"), entry.get("line", 0), entry.get("rule_name")
    message, advice = entry.get("message"), entry.get("help") or ""
    if not (isinstance(file, str) and file in files and isinstance(rule, str) and rule):
        return None
    if not (isinstance(line, int) and isinstance(message, str) and isinstance(advice, str)):
        return None
    return Finding(file, line, rule, message, advice)

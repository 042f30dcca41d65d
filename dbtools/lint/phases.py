"""``make lint``'s phase rules: an expand revision lets both application versions run; a contract drops.

``make migration`` splits a breaking change into an expand revision, run
while the old and the new application version both serve, and a contract
revision, run once the old one is gone (``dbtools.autogenerate.phases``).
What makes the split worth having is what each phase locks, so a hand edit
that breaks it is refused, each in one line, on the revision's rendered
PostgreSQL SQL (``make sql``'s, as the lock review renders it):

- ``expand-holds-lock``: an expand revision holds ``ACCESS EXCLUSIVE`` (or a
  lock that blocks writes) no longer than a catalog change takes. Refused:
  a scan or a write of a table in the transaction that already altered it
  (``VALIDATE CONSTRAINT``, ``UPDATE``, ``DELETE``, ``INSERT``, a backfill's
  ``DO`` block), since the ``ALTER TABLE`` holds its lock until the
  transaction commits; ``SET NOT NULL`` that no ``CHECK (column IS NOT
  NULL)`` validated earlier in the revision lets skip its scan; and
  squawk's findings of a rewrite, a scan under lock or a non-concurrent
  index build (``LONG_LOCKS``), which in an expand revision answer to this
  rule rather than to their own.
- ``contract-does-more``: a contract revision drops (a column, a
  constraint, a trigger, a function, a view, an index, a table), renames,
  sets or drops a default, or runs the ``SET NOT NULL`` a CHECK its expand
  revision validated makes a catalog change. Anything else (a backfill, a
  new column, an index build, a type change) belongs in an expand revision,
  before the new version rolls out, where it cannot break the old one.

Both are acknowledged as any lock rule is, with a reason, in the file:
``acknowledge_locking = {"expand-holds-lock": "<reason>"}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dbtools.lint import contracts
from dbtools.lint.sqltext import top_level_items

EXPAND_RULE = "expand-holds-lock"
CONTRACT_RULE = "contract-does-more"

# squawk's rules (and the lock review's own) for a statement that holds a lock for a rewrite or a scan.
LONG_LOCKS = frozenset(
    {
        "changing-column-type",
        "adding-not-nullable-field",
        "adding-required-field",
        "constraint-missing-not-valid",
        "adding-foreign-key-constraint",
        "disallowed-unique-constraint",
        "adding-serial-primary-key-field",
        "require-concurrent-index-creation",
        "adding-field-with-default",
        "lock-table",
        "vacuum-full",
        "cluster",
        "set-tablespace",
    }
)
EXPAND_HELP = (
    "An expand revision runs while both application versions serve: take a lock only for catalog changes "
    "(commit before a scan: an autocommit_block(); NOT VALID, then VALIDATE; CONCURRENTLY)."
)
CONTRACT_HELP = (
    "A contract revision runs once the old version is gone and only drops and renames what the expand made "
    "obsolete: move this into an expand revision."
)
_ALTER = re.compile(r"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(\S+) (.*)$", re.I | re.S)
_WRITE = re.compile(r"^(?:UPDATE (?:ONLY )?(\S+)|DELETE FROM (?:ONLY )?(\S+)|INSERT INTO (\S+))", re.I)
_NOT_VALID_CHECK = re.compile(r"ADD CONSTRAINT (\S+) CHECK \(\s*(\S+) IS NOT NULL\s*\) NOT VALID", re.I)
_VALIDATE = re.compile(r"VALIDATE CONSTRAINT (\S+)", re.I)
_SET_NOT_NULL = re.compile(r"ALTER COLUMN (\S+) SET NOT NULL", re.I)
_BOOKKEEPING = re.compile(
    r"^(?:SET |RESET |SELECT pg_advisory|(?:UPDATE|INSERT INTO|DELETE FROM) alembic_version\b)", re.I
)
# What a contract may run: drops, renames, defaults, and (checked apart) a trusted SET NOT NULL.
_CONTRACT_STATEMENT = re.compile(
    r"^(?:DROP (?:TRIGGER|FUNCTION|VIEW|INDEX|TABLE|TYPE|SEQUENCE)\b"
    r"|ALTER (?:INDEX|SEQUENCE|VIEW) .* RENAME\b)",
    re.I,
)
_CONTRACT_ACTION = re.compile(
    r"^(?:DROP (?:COLUMN|CONSTRAINT)\b|RENAME\b|ALTER (?:COLUMN )?\S+ (?:SET|DROP) DEFAULT\b"
    r"|ALTER (?:COLUMN )?\S+ SET NOT NULL$)",
    re.I,
)


@dataclass(frozen=True)
class Finding:
    """One statement a phase rule refuses (the lock review makes it a ``Hazard``)."""

    rule: str
    message: str
    help: str
    statement: str


def findings(path: Path, sql: str, files: list[Path]) -> list[Finding]:
    """The phase rules' findings in one revision's rendered SQL; none for a revision of no phase."""
    text = path.read_text()
    phase = contracts.phase_of(text)
    if phase == "expand":
        return [Finding(EXPAND_RULE, why, EXPAND_HELP, f"{stmt};") for stmt, why in _expand(sql)]
    if phase == "contract":
        expand = contracts.expand_of(path, text, files) or ""
        found = _contract(sql, _validated(expand))
        return [Finding(CONTRACT_RULE, why, CONTRACT_HELP, f"{stmt};") for stmt, why in found]
    return []


def in_expand(rule: str, message: str) -> Finding | None:
    """A squawk finding of a long lock (``LONG_LOCKS``) in an expand revision, as the expand rule's."""
    if rule not in LONG_LOCKS:
        return None
    why = f"in an expand revision, which both application versions run through: {message} ({rule})"
    return Finding(EXPAND_RULE, why, EXPAND_HELP, "")


_HELD = (
    "it scans {table} in the transaction that altered it, so the ACCESS EXCLUSIVE lock of that "
    "ALTER TABLE is held, against both application versions, until the scan ends"
)
_UNPROVEN = (
    "SET NOT NULL scans {table} under ACCESS EXCLUSIVE: no CHECK ({column} IS NOT NULL) validated "
    "earlier in the revision lets PostgreSQL skip the scan"
)


def _expand(sql: str) -> Iterator[tuple[str, str]]:
    """(statement, why) for each statement of an expand revision that holds a lock past a catalog change."""
    held: set[str] = set()  # tables altered in the open transaction: ACCESS EXCLUSIVE until it commits
    checks: dict[str, tuple[str, str]] = {}  # a NOT VALID CHECK (column IS NOT NULL): name -> (table, column)
    proven: set[tuple[str, str]] = set()
    last: int | None = None
    for statement, transaction in _statements(sql):
        if transaction is None or transaction != last:
            held.clear()  # a new transaction, or one statement on its own: no lock carried over
        last = transaction
        altered = _ALTER.match(statement)
        table = altered[1] if altered else _written(statement)
        if table is not None and table in held and (not altered or _VALIDATE.search(statement)):
            yield statement, _HELD.format(table=table)
        if altered:
            for name, column in _NOT_VALID_CHECK.findall(statement):
                checks[name] = (table or "", column)
            for name in _VALIDATE.findall(statement):
                if name in checks:
                    proven.add(checks[name])
            for column in _SET_NOT_NULL.findall(statement):
                if (altered[1], column) not in proven:
                    yield statement, _UNPROVEN.format(table=altered[1], column=column)
            if not _VALIDATE.search(statement):
                held.add(altered[1])


def _written(statement: str) -> str | None:
    """The table an UPDATE, DELETE or INSERT writes, or a ``DO`` block's first UPDATE (a backfill)."""
    if statement.upper().startswith("DO "):
        found = re.search(r"\bUPDATE (\S+) SET\b", statement, re.I)
        return found[1] if found else None
    written = _WRITE.match(statement)
    return next((name for name in written.groups() if name), None) if written else None


def _validated(expand: str) -> set[tuple[str, str]]:
    """(table, column) pairs whose CHECK (column IS NOT NULL) the expand revision adds and validates."""
    validated = set(re.findall(r"VALIDATE CONSTRAINT (\w+)", expand))
    return {
        (table, column)
        for table, name, column in re.findall(
            r"ALTER TABLE (\w+) ADD CONSTRAINT (\w+) CHECK \((\w+) IS NOT NULL\) NOT VALID", expand
        )
        if name in validated
    }


def _contract(sql: str, trusted: set[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """(statement, why) for each statement of a contract revision that is more than a drop or a rename."""
    for statement, _ in _statements(sql):
        if _CONTRACT_STATEMENT.match(statement):
            continue
        altered = _ALTER.match(statement)
        actions = _actions(altered[2]) if altered else []
        if altered and all(_CONTRACT_ACTION.match(action) for action in actions):
            for action in actions:
                column = _SET_NOT_NULL.match(action)
                if column and (altered[1], column[1]) not in trusted:
                    yield (
                        statement,
                        (
                            f"SET NOT NULL scans {altered[1]} under ACCESS EXCLUSIVE: its expand revision "
                            f"validates no CHECK ({column[1]} IS NOT NULL) that lets PostgreSQL skip the scan"
                        ),
                    )
            continue
        yield statement, "a contract revision may only drop, rename, or set NOT NULL or a default"


def _actions(text: str) -> list[str]:
    return [" ".join(item.split()) for item in top_level_items(text)]


def _statements(sql: str) -> Iterator[tuple[str, int | None]]:
    """Each statement of the revision's own part of ``sql``, whitespace collapsed, and its transaction.

    The transaction is a number that changes at each ``BEGIN``, or None for a
    statement run on its own (after a ``COMMIT``: an ``autocommit_block()``).

    Alembic renders each statement ending in ``;`` at a line's end, and a
    transaction's ``BEGIN;`` and ``COMMIT;`` on lines of their own; a
    dollar-quoted body is kept whole. The header (the run's lock, its
    timeouts, the check of the starting revision) and the version table's
    bookkeeping are left out.
    """
    started = False
    transaction: int | None = None
    begun = 0
    pending: list[str] = []
    for line in sql.splitlines():
        if line.startswith("-- Running upgrade"):
            started = True
            continue
        if not pending and line.strip() in ("BEGIN;", "COMMIT;"):
            begun += 1
            transaction = begun if line.strip() == "BEGIN;" else None
            continue
        if not started or (not pending and (not line.strip() or line.lstrip().startswith("--"))):
            continue
        pending.append(line)
        joined = " ".join(" ".join(pending).split())
        if not joined.endswith(";") or joined.count("$$") % 2:
            continue
        pending = []
        statement = joined[:-1].strip()
        if not _BOOKKEEPING.match(statement):
            yield statement, transaction

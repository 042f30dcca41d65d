"""``make lint``'s own review: no migration may lose data or lock a table without saying why.

Nor may it keep a marker autogenerate left where a type change needs a
``USING`` cast it could not write (``dbtools.autogenerate.pgsql.USING_MARKER``).

ruff and mypy run beside it in the Makefile; these are the parts only this
project knows: data loss (``dbtools.lint.dataloss``) and PostgreSQL locks
(``dbtools.lint.locks``, squawk on each revision's SQL). An intended hazard is
acknowledged in its migration file (``dbtools.lint.acknowledgements``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from alembic.config import Config

from dbtools.autogenerate.pgsql import FILL_MARKER, USING_MARKER
from dbtools.lint import acknowledgements, contracts, locks, phases
from dbtools.lint.dataloss import LockFacts, lock_facts, scan
from dbtools.lint.locks import Hazard
from dbtools.paths import VERSIONS


@dataclass(frozen=True)
class Verdict:
    """What ``make lint`` says: notes on what is acknowledged, and the hazards it refuses."""

    files: int
    notes: list[str]
    refused: list[str]


def review(config: Config, paths: list[str]) -> Verdict:
    """Review the migration files (or folders) in ``paths``; all of migrations/versions by default."""
    given = [Path(path) for path in paths] or [VERSIONS]
    files = sorted(f for p in given for f in (p.glob("*.py") if p.is_dir() else [p]))
    hazards, reviewed = locks.review(config, files)
    notes: list[str] = []
    refused: list[str] = []
    for path in files:
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        marked = acknowledgements.read(tree)
        refused.extend(unwritten_casts(text, path))
        refused.extend(f"{path.name}: {problem}" for problem in marked.problems)
        found = scan(tree, path)
        contract = contracts.intact(path, text, files)
        if contract is not None:  # the generated contract of an intact pair: see dbtools.lint.contracts
            notes.append(f"{path.name}: contract of an intact expand/contract pair; its drops lose nothing")
            found = [finding for finding in found if not contract[0].acknowledges(finding.what, contract[1])]
        if found and marked.destructive:
            notes.append(f"{path.name}: destructive, acknowledged ({marked.destructive})")
        elif found:
            refused.extend(f"{finding} [data loss]" for finding in found)
        if path.resolve() not in reviewed:
            notes.append(
                f"{path.name}: not in the migration history, so its PostgreSQL locks were not reviewed"
            )
        facts = lock_facts(tree, path)
        mine = [h for h in hazards if h.path == path.resolve() and not _harmless(h, facts)]
        if contract is not None:
            mine = [h for h in mine if not contract[0].acknowledges(h.statement, contract[1])]
        if contracts.phase_of(text) == "expand":  # a long lock answers to the phase rule (lint.phases)
            mine = [_in_expand(h) for h in mine]
        mine = _once_per_statement(mine)
        found_rules = {h.rule for h in mine}
        refused.extend(str(h) for h in mine if h.rule not in marked.locking)
        for rule, reason in marked.locking.items():
            if rule in found_rules:
                notes.append(f"{path.name}: {rule}, acknowledged ({reason})")
            elif path.resolve() in reviewed:
                notes.append(
                    f"{path.name}: acknowledges {rule}, which the lock review does not find (any more)"
                )
    return Verdict(len(files), notes, refused)


def _in_expand(hazard: Hazard) -> Hazard:
    found = phases.in_expand(hazard.rule, hazard.message)
    if found is None:
        return hazard
    return replace(hazard, rule=found.rule, message=found.message, help=found.help)


def _once_per_statement(hazards: list[Hazard]) -> list[Hazard]:
    """A statement a phase rule refuses is refused once, by that rule, whatever squawk also found in it."""
    phased = {h.statement for h in hazards if h.rule in (phases.EXPAND_RULE, phases.CONTRACT_RULE)}
    kept: list[Hazard] = []
    for hazard in hazards:
        if hazard.statement in phased and hazard.rule not in (phases.EXPAND_RULE, phases.CONTRACT_RULE):
            continue
        if any(h.rule == hazard.rule and h.statement == hazard.statement for h in kept):
            continue
        kept.append(hazard)
    return kept


def unwritten_casts(text: str, path: Path) -> list[str]:
    """Each type change autogenerate marked because it knows no cast for it: the USING is the author's.

    Not acknowledgeable: the migration fails on PostgreSQL until it is written.
    """
    lines = list(enumerate(text.splitlines(), start=1))
    return [
        f"{path}:{number}: {line.strip().removeprefix(USING_MARKER).strip()}: PostgreSQL does not cast "
        "it by itself; write its postgresql_using, then delete the marker [USING needed]"
        for number, line in lines
        if line.strip().startswith(USING_MARKER)
    ] + [
        f"{path}:{number}: {line.strip().removeprefix(FILL_MARKER).strip()}: the column has no default; "
        "write the fill in place of NULL in the trigger and the SQLite UPDATE, then delete the marker "
        "[FILL needed]"
        for number, line in lines
        if line.strip().startswith(FILL_MARKER)
    ]


def _harmless(hazard: Hazard, facts: LockFacts) -> bool:
    """A squawk finding that, in this migration, locks nothing worth a review (``HARMLESS``)."""
    harmless = HARMLESS.get(hazard.rule)
    return harmless is not None and harmless(hazard.statement, facts)


def _text_widened(statement: str, facts: LockFacts) -> bool:
    """A type change within text that only widens: PostgreSQL changes its catalog, no rewrite."""
    return any(
        f"ALTER TABLE {table} ALTER COLUMN {column} TYPE " in statement
        for table, column in facts.widened_text
    )


ADDED_DEFAULT = re.compile(r"^ALTER TABLE \S+ ADD COLUMN .* DEFAULT (.+?)(?: NOT NULL| NULL)?;?$", re.I)
# A constant, or the clock as of the transaction's start: immutable or stable, never volatile.
NON_VOLATILE = re.compile(
    r"-?\d+(\.\d+)?|'(?:[^']|'')*'|true|false|null"
    r"|(CURRENT_TIMESTAMP|CURRENT_TIME|LOCALTIMESTAMP|LOCALTIME)(\s*\(\d+\))?|CURRENT_DATE"
    r"|(now|transaction_timestamp)\(\s*\)",
    re.I,
)


def _non_volatile_default(statement: str, facts: LockFacts) -> bool:
    """A column added with a non-volatile default: PostgreSQL 11+ stores it once, no rewrite.

    squawk 2.70 flags every default in parentheses, and Alembic writes
    SQLite's expression defaults in them: ``server_default=func.now()``
    autogenerates as ``sa.text("(CURRENT_TIMESTAMP)")``, which is also what
    PostgreSQL runs. A volatile one (``clock_timestamp()``, ``random()``)
    rewrites the table and stays a hazard.
    """
    added = ADDED_DEFAULT.match(statement)
    default = added[1].strip() if added else ""
    while default.startswith("(") and default.endswith(")"):
        default = default[1:-1].strip()
    return bool(default) and NON_VOLATILE.fullmatch(default) is not None


def _index_of_dropped_table(statement: str, facts: LockFacts) -> bool:
    """A plain DROP INDEX before its table's DROP TABLE, which takes the same lock anyway."""
    dropped = re.match(r"^DROP INDEX (?:IF EXISTS )?(\S+?);?$", statement, re.I)
    return dropped is not None and dropped[1].strip('"') in facts.indexes_of_dropped_tables


# squawk's rules that this project reads more closely, knowing the whole migration.
HARMLESS: dict[str, Callable[[str, LockFacts], bool]] = {
    "changing-column-type": _text_widened,
    "adding-field-with-default": _non_volatile_default,
    "require-concurrent-index-deletion": _index_of_dropped_table,
}

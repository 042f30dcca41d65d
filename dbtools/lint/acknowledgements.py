"""What a migration file says it does on purpose, read by ``make lint``.

One mechanism for every hazard the lint finds, kept in the migration it
excuses, so it is reviewed with that migration and never silences another:

    acknowledge_destructive = "why losing this data is intended"
    acknowledge_locking = {"changing-column-type": "why this lock is acceptable"}

Data loss is one decision per migration. Locks are one per squawk rule: a
reason for rewriting a small table says nothing about a later unique constraint.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

DESTRUCTIVE = "acknowledge_destructive"
LOCKING = "acknowledge_locking"


@dataclass(frozen=True)
class Acknowledgements:
    destructive: str | None = None
    locking: dict[str, str] = field(default_factory=dict)
    # How a marker is malformed; make lint refuses the file with this.
    problems: tuple[str, ...] = ()


def read(tree: ast.Module) -> Acknowledgements:
    """The markers set at the module's top level."""
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in (DESTRUCTIVE, LOCKING):
                values[target.id] = value
    problems = []
    destructive = _reason(values.get(DESTRUCTIVE))
    if DESTRUCTIVE in values and destructive is None:
        problems.append(f'{DESTRUCTIVE} must be a non-empty string: {DESTRUCTIVE} = "<reason>"')
    locking: dict[str, str] = {}
    given = values.get(LOCKING)
    if given is not None:
        pairs = zip(given.keys, given.values, strict=True) if isinstance(given, ast.Dict) else None
        for key, value in pairs or []:
            rule, reason = _reason(key), _reason(value)
            if rule is None or reason is None:
                pairs = None
                break
            locking[rule] = reason
        if pairs is None:
            problems.append(
                f'{LOCKING} must map squawk rule names to reasons: {LOCKING} = {{"<rule>": "<reason>"}}'
            )
            locking = {}
    return Acknowledgements(destructive, locking, tuple(problems))


def _reason(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
        return node.value
    return None

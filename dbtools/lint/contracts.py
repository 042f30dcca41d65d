"""A contract revision whose expand revision is intact: what it drops or sets needs no acknowledgement.

``make migration`` writes a breaking change as an expand revision and a
contract revision (``phase = "contract"``, ``dbtools.autogenerate.phases``).
For a renamed column the contract drops the trigger that kept the two
columns in sync, its function and the old column, whose values live on in
the new one: not data loss. For a type change it also renames the shadow
column, which the expand revision added, to the old column's name. For a
new NOT NULL it runs ``SET NOT NULL``, which trusts the CHECK the expand
revision validated (no scan), and drops that CHECK, the trigger that filled
NULL writes and its function. For a renamed table it drops the view the
expand revision left under the old name: the rows are in the table. That
holds only while the shape is the generated one: the contract drops exactly
the trigger (or the view) its expand revision (the revision it revises)
creates. Anything else is reviewed as any migration is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PHASE = re.compile(r'^phase = "(expand|contract)"$', re.M)
_REVISION = re.compile(r'^revision: str = "(\w+)"$', re.M)
_DOWN = re.compile(r'^down_revision: [^=]+= "(\w+)"$', re.M)
_TRIGGER = re.compile(
    r'"DROP TRIGGER IF EXISTS (\w+) ON (\w+)"\)\s+op\.execute\("DROP FUNCTION IF EXISTS \1\(\)"\)'
)
_VIEW = re.compile(r'"DROP VIEW IF EXISTS (\w+)"')


def phase_of(text: str) -> str | None:
    """``"expand"`` or ``"contract"`` for a revision ``make migration`` split, None for any other."""
    found = PHASE.search(text)
    return found[1] if found else None


@dataclass(frozen=True)
class Contract:
    """What an intact contract revision drops and sets, by name: a trigger's function, or a view."""

    function: str | None
    table: str
    view: str | None = None

    def acknowledges(self, statement: str, expand: str) -> bool:
        """Whether ``statement`` (squawk's, or the data-loss finding's) is the generated contract's own."""
        if self.view is not None:
            return f"DROP VIEW IF EXISTS {self.view}" in statement
        if f"DROP FUNCTION IF EXISTS {self.function}()" in statement:
            return True
        column = re.search(rf"ALTER TABLE {self.table} DROP COLUMN (\w+)", statement)
        if column:  # the old column of a rename: the expand revision grew its replacement
            return f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS " in expand
        not_null = re.search(rf"ALTER TABLE {self.table} ALTER COLUMN (\w+) SET NOT NULL", statement)
        if not_null:  # trusted: the expand revision validated a CHECK that proves it
            return f"VALIDATE CONSTRAINT ck_{self.table}_{not_null[1]}_not_null" in expand
        check = re.search(r"DROP CONSTRAINT IF EXISTS (\w+)", statement)  # the finding may cut the name
        return check is not None and any(
            name.startswith(check[1]) for name in re.findall(r"VALIDATE CONSTRAINT (\w+)", expand)
        )


def expand_of(path: Path, text: str, files: list[Path]) -> str | None:
    """The text of the expand revision ``path`` (a contract) revises, adjacent SQL literals joined."""
    down = _DOWN.search(text)
    if phase_of(text) != "contract" or down is None:
        return None
    for other in files:
        other_text = other.read_text() if other != path else ""
        revision = _REVISION.search(other_text)
        if revision and revision[1] == down[1] and phase_of(other_text) == "expand":
            return re.sub(r'"\s+"', "", other_text)  # long SQL is split into adjacent literals
    return None


def intact(path: Path, text: str, files: list[Path]) -> tuple[Contract, str] | None:
    """The contract ``path`` is, and its expand revision's text, if that creates what it drops."""
    expand = expand_of(path, text, files)
    if expand is None:
        return None
    if (drops := _TRIGGER.search(text)) is not None:
        function, table = drops.groups()
        if f"CREATE TRIGGER {function} BEFORE INSERT OR UPDATE ON {table} " in expand:
            return Contract(function, table), expand
    elif (view := _VIEW.search(text)) is not None:
        created = re.search(rf'"CREATE VIEW {view[1]} AS SELECT \* FROM (\w+)"', expand)
        if created is not None:
            return Contract(None, created[1], view=view[1]), expand
    return None

"""A contract revision whose expand revision is intact: its drops lose nothing, and need no acknowledgement.

``make migration`` writes a column rename as an expand revision (the new
column, kept in sync with the old one by a trigger) and a contract revision
(``phase = "contract"``) that drops the trigger, its function and the old
column (``dbtools.autogenerate.phases``). The old column's values live on in
the new one, so its drop is not data loss, and the function dropped is the
migration's own. That holds only while the shape is the generated one: the
contract drops exactly the trigger its expand revision (the revision it
revises) creates, and the column beside it. Anything else is reviewed as
any migration is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_PHASE = re.compile(r'^phase = "(expand|contract)"$', re.M)
_REVISION = re.compile(r'^revision: str = "(\w+)"$', re.M)
_DOWN = re.compile(r'^down_revision: [^=]+= "(\w+)"$', re.M)
_DROPS = re.compile(
    r'"DROP TRIGGER IF EXISTS (\w+) ON (\w+)"\)\s+op\.execute\("DROP FUNCTION IF EXISTS \1\(\)"\)\s+'
    r'op\.execute\("ALTER TABLE \2 DROP COLUMN (\w+)"\)'
)


@dataclass(frozen=True)
class Contract:
    """What an intact contract revision drops: the sync function, and the old column."""

    function: str
    table: str
    column: str

    def drops_column(self, statement: str) -> bool:
        return f"ALTER TABLE {self.table} DROP COLUMN {self.column}" in statement

    def drops_function(self, statement: str) -> bool:
        return f"DROP FUNCTION IF EXISTS {self.function}()" in statement


def intact(path: Path, text: str, files: list[Path]) -> Contract | None:
    """The contract ``path`` is, if its expand revision (among ``files``) creates the trigger it drops."""
    if not (phase := _PHASE.search(text)) or phase[1] != "contract":
        return None
    down, drops = _DOWN.search(text), _DROPS.search(text)
    if down is None or drops is None:
        return None
    function, table, column = drops.groups()
    for other in files:
        other_text = other.read_text() if other != path else ""
        revision, phase = _REVISION.search(other_text), _PHASE.search(other_text)
        if revision and revision[1] == down[1] and phase and phase[1] == "expand":
            joined = re.sub(r'"\s+"', "", other_text)  # long SQL is split into adjacent literals
            if f"CREATE TRIGGER {function} BEFORE INSERT OR UPDATE ON {table} " in joined:
                return Contract(function, table, column)
    return None

"""SQL text read as statements, for the lint's own rules: literal SQL in a migration, or its rendered SQL.

Not a parser: enough to see where a statement starts and ends, and which
parts are quoted, so that a ``;`` or a ``DROP`` inside a string or a comment
is not taken for a statement.
"""

from __future__ import annotations

import re

# A quoted string or identifier (unterminated: to the end), a comment, a
# separator, or a run of anything else.
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|--[^\n]*|/\*.*?(?:\*/|\Z)|[;,()]|[^'";,()/-]+|.""", re.DOTALL
)


def statements(sql: str) -> list[str]:
    """Each statement in ``sql``, comments dropped and whitespace collapsed to single spaces.

    Split at each ``;`` outside quotes. A dollar-quoted body (a ``DO`` block's)
    is split like the rest, so the statements inside it are read too.
    """
    found: list[str] = []
    current: list[str] = []
    for piece in _TOKEN.findall(sql):
        if piece == ";":
            found.append(" ".join("".join(current).split()))
            current = []
        elif piece.startswith(("--", "/*")):
            current.append(" ")
        else:
            current.append(piece)
    found.append(" ".join("".join(current).split()))
    return [statement for statement in found if statement]


def top_level_items(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses and quotes: an ``ALTER TABLE``'s actions."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for piece in _TOKEN.findall(text):
        if piece == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(piece, 0)
        current.append(piece)
    items.append("".join(current).strip())
    return items

"""The checksum of a migration file, with the standard library only.

One definition for the full run (``checksums``) and the no-op fast path
(``fastpath``), which must agree byte for byte and may not import SQLAlchemy.

A re-point is not an edit: the checksum covers the file with its parent left
out, that is the value of the module-level ``down_revision`` assignment and
the docstring's ``Revises:`` line, each replaced by a fixed placeholder. A
migration moved onto another parent (after two branches met) still matches
what every database that applied it recorded; any other change does not.

Databases migrated before this recorded the sha256 of the whole file (the
*legacy* form). ``matches`` accepts either form, so they stay valid with
nothing to do; every new record is in the parent-free form.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PARENT = "<parent>"
# The assignment Alembic reads (annotated or not), at the start of a line: its value is None,
# one quoted revision, or a tuple or list of them on the same line (a merge revision).
_DOWN_REVISION = re.compile(
    r"""^(?P<name>down_revision\b[^=\n]*=[ \t]*)"""
    r"""(?P<value>None|'[^'\n]*'|"[^"\n]*"|\([^()\n]*\)|\[[^\[\]\n]*\])"""
    r"""(?=[ \t]*(?:\#[^\n]*)?$)""",
    re.MULTILINE,
)
# The line the template writes into the docstring right below "Revision ID:" ("Revises:" at base);
# a message of several lines may hold a "Revises:" of its own, above, which stays covered.
_REVISES = re.compile(r"^(?P<id>Revision ID:[^\n]*\n)Revises:[^\n]*$", re.MULTILINE)


def read_script(path: str | Path) -> str:
    """The script's text, line endings normalised so a CRLF checkout still matches."""
    return Path(path).read_bytes().replace(b"\r\n", b"\n").decode("utf-8", errors="replace")


def without_parent(source: str) -> str:
    """``source`` with its parent replaced by a placeholder: the first of each line, nothing else."""
    source = _REVISES.sub(lambda match: f"{match['id']}Revises: {PARENT}", source, count=1)
    return _DOWN_REVISION.sub(lambda match: f"{match['name']}{PARENT!r}", source, count=1)


def checksum_of(source: str) -> str:
    """What a run records for a migration whose text is ``source``."""
    return hashlib.sha256(without_parent(source).encode("utf-8")).hexdigest()


def legacy_checksum_of(source: str) -> str:
    """What runs recorded before the parent was left out: the sha256 of the whole text."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def accepted(source: str) -> tuple[str, str]:
    """Every checksum a run may have recorded for a migration whose text is ``source``: both forms."""
    return checksum_of(source), legacy_checksum_of(source)


def matches(recorded: str, source: str) -> bool:
    """Whether a recorded checksum, of either form, is the checksum of ``source``."""
    return recorded in accepted(source)


def file_checksum(path: str | Path) -> str:
    return checksum_of(read_script(path))

"""The checksum of a migration file, with the standard library only.

One definition for the full run (``integrity``) and the no-op fast path
(``fastpath``), which must agree byte for byte and may not import SQLAlchemy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def read_script(path: str | Path) -> str:
    """The script's text, line endings normalised so a CRLF checkout still matches."""
    return Path(path).read_bytes().replace(b"\r\n", b"\n").decode("utf-8", errors="replace")


def checksum_of(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def file_checksum(path: str | Path) -> str:
    return checksum_of(read_script(path))

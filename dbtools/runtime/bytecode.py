"""Bytecode Python must not trust: a model or migration file changed in the second its .pyc was written.

Python reuses a module's ``.pyc`` when the source's size and modification
time, to the second, are those it recorded when it compiled it. So a file
rewritten within the second it was compiled, keeping its size, runs as it was:
``make rebase`` re-pointing a ``down_revision`` to another 12-character id
right after a run loaded the file, a script's ``sed`` and then ``make
migration``, a test. The history, or the models, are then the old ones, and
the run is wrong without a word (``make test`` failed ten tests this way on a
machine that writes bytecode, which this one, with PYTHONDONTWRITEBYTECODE=1,
never showed).

As git does with a "racily clean" index entry, a ``.pyc`` written no later
than the second its source was last changed is dropped before anything imports
the source; Python compiles it again (and writes a ``.pyc`` it can trust).
Only the user's own files, which they edit: the models and the migrations.
``python -m dbtools`` does it before its command, and env.py again before a
run: a command may rewrite a migration (``make rebase``) and then run one in
the same process, and a plain ``alembic`` run has only env.py. Each walk is
about 0.2 ms.
"""

from __future__ import annotations

import os
from contextlib import suppress
from importlib.util import cache_from_source

from dbtools.paths import ROOT

FOLDERS = ("models", "migrations")  # under ROOT, read at each call
NANOSECONDS = 1_000_000_000


def drop_racy() -> None:
    """Remove each .pyc of models/ and migrations/ that may predate an edit of its source."""
    for folder in FOLDERS:
        _drop_racy_in(os.fspath(ROOT / folder))


def _drop_racy_in(folder: str) -> None:
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == "__pycache__":
                continue
            if entry.is_dir(follow_symlinks=False):
                _drop_racy_in(entry.path)
            elif entry.name.endswith(".py"):
                _drop_if_racy(entry.path, entry.stat().st_mtime_ns)


def _drop_if_racy(source: str, changed_ns: int) -> None:
    cached = cache_from_source(source)
    with suppress(OSError):
        if os.stat(cached).st_mtime_ns // NANOSECONDS <= changed_ns // NANOSECONDS:
            os.unlink(cached)

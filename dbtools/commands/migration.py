"""``make migration``: autogenerate a migration from the models, or nothing if they did not change.

Renames are asked about on a terminal (stdin and stdout both), or answered with ``renames=``
(``dbtools.autogenerate.renames``).
"""

from __future__ import annotations

import sys

from alembic import command
from alembic.config import Config

from dbtools import paths, target
from dbtools.autogenerate import headfile, hooks
from dbtools.autogenerate.renames import parse
from dbtools.run import Decisions, Run
from dbtools.runtime import nochange


def migration(config: Config, message: str, renames: str = "") -> None:
    seen = nochange.fingerprint()  # before anything is read: an edit meanwhile never matches
    before = set(paths.VERSIONS.iterdir())
    # Ask only a user who sees the question: with stdout redirected it would wait, unseen, in the file.
    on_a_terminal = sys.stdin.isatty() and sys.stdout.isatty()
    decisions = Decisions(answers=parse(renames), ask=on_a_terminal, message=message)
    run = Run(
        creates_database=False, applies_migrations=False, autogenerates=True, rename_decisions=decisions
    )
    command.revision(
        run.start_with(headfile.without_hook(config)),  # this process rewrites head.txt, below
        message=message,
        autogenerate=True,
        process_revision_directives=hooks.write_or_skip,
    )
    written = set(paths.VERSIONS.iterdir()) != before
    if written:
        headfile.update(config)
    elif not renames:  # nothing written: found alike
        nochange.remember(target.resolve(config).plain_file, seen)

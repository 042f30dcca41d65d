"""``make check``: fail when the models differ from the migrated database.

A check that found them alike is recorded (``dbtools.runtime.nochange``), so the
next one with nothing changed answers without importing anything.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from dbtools import target
from dbtools.run import Run
from dbtools.runtime import nochange


def check(config: Config) -> None:
    seen = nochange.fingerprint()  # before anything is read: an edit meanwhile never matches
    run = Run(creates_database=False, applies_migrations=False, autogenerates=True)
    command.check(run.start_with(config))
    nochange.remember(target.resolve(config).plain_file, seen)  # found alike: the next look may be short

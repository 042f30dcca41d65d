"""Regenerate tests/squash_history/ (see its __init__): ``python -m tests.squash_history``."""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.commands import migration
from tests import workers
from tests.evolution import FIDELITY_CHAIN, POSTS_CHAIN, USERS_CHAIN, Change
from tests.helpers import Project
from tests.test_model_changes_evolve_on_both_backends import Deployment, upgrade

HERE = Path(__file__).resolve().parent
# Reference rows, as a data step inserts them: carried over by a squash.
SYSTEM_USER = "INSERT INTO users (username, email) VALUES ('system', 'system@example.com')"
WELCOME_POST = "INSERT INTO posts (user_id, title) SELECT id, 'welcome' FROM users WHERE username = 'system'"
CHANGES: tuple[Change, ...] = (
    *USERS_CHAIN[:15],
    *POSTS_CHAIN,
    *(change for change in FIDELITY_CHAIN if change.message != "big user ids"),  # the users chain widened
)
INSERTS = {1: SYSTEM_USER, 16: WELCOME_POST}


def insert_after_upgrade(path: Path, statement: str) -> None:
    text = path.read_text()
    marker = "\n\n\ndef downgrade() -> None:"
    path.write_text(text.replace(marker, f"\n    op.execute({statement!r}){marker}", 1))


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, pgserver.throwaway_database() as pg_url:
        project = Project.copy_to(Path(folder) / "project")
        urls = {"sqlite": URL.create("sqlite", database=f"{folder}/app.db"), "postgresql": pg_url}
        deployment = Deployment(project, urls)
        try:
            for url in urls.values():
                project.migrate(url)
            (first,) = project.versions.glob("*.py")
            names = [first]
            for position, change in enumerate(CHANGES, start=1):
                deployment.edit_models(change)
                message, answers = change.message, change.answers
                call = workers.call(
                    str(project.root),
                    urls["sqlite"],
                    functools.partial(migration.migration, message=message, renames=answers),
                )
                assert call == 0, message
                (path,) = project.versions.glob(f"*_{message.replace(' ', '_')}.py")
                if change.hand_edit is not None:
                    path.write_text(change.hand_edit(path.read_text()))
                if position in INSERTS:
                    insert_after_upgrade(path, INSERTS[position])
                names.append(path)
                for url in urls.values():
                    assert workers.call(str(project.root), url, upgrade) == 0, message
                deployment.refresh_snapshot()
        finally:
            deployment.close()
        shutil.rmtree(HERE / "versions", ignore_errors=True)
        shutil.rmtree(HERE / "models", ignore_errors=True)
        (HERE / "versions").mkdir()
        for position, path in enumerate(names):
            slug = re.sub(r"^[^-]*-", "", path.name)
            (HERE / "versions" / f"r{position:02d}-{slug}").write_text(path.read_text())
        shutil.copytree(
            project.root / "models", HERE / "models", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(project.root / "schema" / "postgresql.sql", HERE / "postgresql.sql")


if __name__ == "__main__":
    main()

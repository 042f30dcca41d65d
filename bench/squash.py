"""Row g. of ``make bench``: a fresh ``make upgrade`` with 500 migrations, before and after ``make squash``.

Every new database (each CI run, test database, tenant) replays the whole
history; the squash replaces it with one step. A copy of the project gets 500
migrations after its first (one table each), is committed to git (make squash
refuses a dirty migrations/), then a new SQLite database is upgraded by the
whole CLI, start-up included, before and after ``make squash upto=<the 500th>``.
The squash needs a PostgreSQL server for its proof: TEST_DATABASE_URL's, or a
throwaway one. ``python -m bench.squash`` measures this row alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench.harness import Series, compare, in_child, timed_command
from dbtools.paths import ROOT

COUNT = 500
IGNORE = shutil.ignore_patterns(".venv", ".git", "app.db*", "__pycache__", ".*_cache", ".dbtools", "backups")


def build(project: Path) -> str:
    """500 migrations after the first; the last one's revision id."""
    shutil.copytree(ROOT, project, ignore=IGNORE)
    os.symlink(Path(sys.prefix), project / ".venv")
    versions = project / "migrations" / "versions"
    (first,) = versions.glob("*.py")
    down = first.name.split("-")[1].split("_")[0]
    for number in range(1, COUNT + 1):
        revision = f"{number:012x}"
        (versions / f"9999_{number:04d}-{revision}_bench.py").write_text(
            textwrap.dedent(f'''\
                """bench {number}"""

                import sqlalchemy as sa
                from alembic import op

                revision = {revision!r}
                down_revision = {down!r}
                branch_labels = None
                depends_on = None


                def upgrade() -> None:
                    op.create_table("bench_{number}", sa.Column("id", sa.Integer, primary_key=True))


                def downgrade() -> None:
                    op.drop_table("bench_{number}")
                ''')
        )
        down = revision
    (project / "migrations" / "head.txt").write_text(
        (project / "migrations" / "head.txt").read_text().rsplit("\n", 2)[0] + f"\n{down}\n"
    )
    commit(project, "history")
    return down


def commit(project: Path, message: str) -> None:
    """make squash refuses uncommitted changes under migrations/, as a user's checkout would have none."""
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", message]):
        subprocess.run([*git, *argv], cwd=project, check=True, capture_output=True)


def before_and_after(repeat: int) -> tuple[Series, Series, Series]:
    """A fresh upgrade's times with the 501 migrations, with the squash beside them, then pruned."""
    with tempfile.TemporaryDirectory(prefix="bench-squash-") as folder:
        project = Path(folder) / "project"
        last = build(project)
        database = project / "fresh.db"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
        upgrade = timed_command([sys.executable, "-m", "dbtools", "upgrade"], project, env)

        def fresh() -> None:
            database.unlink(missing_ok=True)
            shutil.rmtree(project / ".dbtools", ignore_errors=True)

        before = compare(repeat, {"before": (fresh, upgrade)})["before"]
        squash = [sys.executable, "-m", "dbtools", "squash", f"--upto={last}"]
        subprocess.run(squash, cwd=project, env=env, check=True, capture_output=True)
        after = compare(repeat, {"after": (fresh, upgrade)})["after"]
        commit(project, "squash")  # the two-step release: the squash ships, then the prune
        prune = [
            sys.executable,
            "-m",
            "dbtools",
            "squash",
            "--prune=1",
        ]  # alone: make squash refuses upto= with it
        subprocess.run(prune, cwd=project, env=env, check=True, capture_output=True)
        pruned = compare(repeat, {"pruned": (fresh, upgrade)})["pruned"]
    return before, after, pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    from bench.__main__ import warm_imports  # as make bench measures its idle fork

    warm_imports()
    idle = in_child(lambda: None).peak_rss_mb
    before, after, pruned = before_and_after(parser.parse_args().repeat)
    what = f"g. squash: fresh `make upgrade` of {COUNT + 1} migrations, after `make squash`"
    floor = f"the same before the squash: {before.seconds:.2f} s"
    for name, series in ((f"{what} (old files kept)", after), (f"{what} and `prune=1`", pruned)):
        print(
            f"| {name} | {series.seconds:.2f} s | {floor} | {series.seconds / before.seconds:.2f} |  "
            f"| {series.peak_rss_mb - idle:+.1f} MB |  |"
        )


if __name__ == "__main__":
    main()

"""migrations/head.txt: every new migration rewrites it, so two branches that each add one conflict in git.

alembic-linear-migrations writes and reads the file; ``make migration`` and
plain ``alembic revision`` keep it current, and ``make lint`` refuses it
stale, missing or garbled, or a graph with two heads, in one line with the fix.
"""

from __future__ import annotations

from tests.helpers import Project, failed_line


def test_plain_alembic_revision_rewrites_the_head_file(project_copy: Project) -> None:
    made = project_copy.forked_alembic("revision", "-m", "written by hand")

    assert made.returncode == 0, made.stderr
    (new,) = project_copy.heads()
    assert len(list(project_copy.versions.glob(f"*{new}_written_by_hand.py"))) == 1
    assert project_copy.recorded_head() == new


def test_make_lint_refuses_a_head_file_that_does_not_name_the_one_head(project_copy: Project) -> None:
    head = project_copy.heads()[0]
    mine = project_copy.add_migration("pass", updates_head_file=False)  # copied in: no hook ran

    line = failed_line(project_copy.cli("lint"))
    assert f"migrations/head.txt is stale: it records {head}, but the head is {mine}" in line
    assert "run `.venv/bin/alembic-linear update` and commit it" in line

    theirs = project_copy.add_migration("pass", down_revision=head)  # the other branch's, merged
    line = failed_line(project_copy.cli("lint"))
    assert f"the migration history has 2 heads ({', '.join(sorted([mine, theirs]))})" in line
    assert "re-point yours onto theirs with `make rebase`" in line

    (path,) = project_copy.versions.glob(f"*{theirs}*.py")
    path.unlink()
    project_copy.head_file.write_text("garbage\nmore garbage\n")
    line = failed_line(project_copy.cli("lint"))
    assert "migrations/head.txt is unreadable" in line
    assert "records more than one revision (garbage, more garbage)" in line

    project_copy.head_file.unlink()
    line = failed_line(project_copy.cli("lint"))
    assert "migrations/head.txt is missing; create it with `.venv/bin/alembic-linear update`" in line

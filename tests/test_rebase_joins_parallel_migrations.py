"""make rebase: two branches' migrations, joined after a conflict in migrations/head.txt, and proved.

Real git repositories: the project copied into one, two branches each adding a
column with ``make migration`` (forked, to stay cheap), then ``git merge`` or
``git rebase``. The real ``make rebase`` runs once; the other runs are forked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from dbtools import pgserver
from tests.helpers import VENV, Project, current_revision, engine_for, failed_line

ANCHOR = "    def __repr__"


def git(project: Project, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["git", *args], cwd=project.root, capture_output=True, text=True, check=False)
    assert not check or done.returncode == 0, done.stderr
    return done


@pytest.fixture
def repo(tmp_path: Path) -> Project:
    """The project in a git repository, committed on main."""
    project = Project.copy_to(tmp_path / "project")
    git(project, "init", "-q", "-b", "main")
    git(project, "config", "user.email", "dev@example.com")
    git(project, "config", "user.name", "Dev")
    git(project, "config", "merge.conflictstyle", "merge")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "main")
    return project


def model_with(project: Project, *columns: str) -> str:
    text = (project.root / "models" / "user.py").read_text()
    return text.replace(ANCHOR, "".join(f"    {column}\n" for column in columns) + "\n" + ANCHOR, 1)


def branch(project: Project, name: str, column: str, database: URL) -> str:
    """A branch off main adding ``column`` to User, its migration written by make migration; its id."""
    git(project, "checkout", "-q", "-b", name, "main")
    (project.root / "models" / "user.py").write_text(model_with(project, column))
    project.migrate(database)
    made = project.cli("migration", f"--message=add {name}'s column", url=database)
    assert made.returncode == 0, made.stderr
    git(project, "add", "-A")
    git(project, "commit", "-qm", f"{name}'s column")
    return project.recorded_head()


def down_revision(project: Project, rev: str) -> str:
    (path,) = project.versions.glob(f"*{rev}*.py")
    text = path.read_text()
    found = re.search(r"^down_revision[^=]*= *[\"'](\w+)[\"']", text, re.MULTILINE)
    assert found, text
    revises = re.search(r"^Revises: (\w+)$", text, re.MULTILINE)
    assert revises is None or revises.group(1) == found.group(1)  # the docstring agrees
    return found.group(1)


def hand_branch(project: Project, name: str, upgrade: str) -> str:
    """A branch off main with a hand-written migration (the model left alone); its id."""
    git(project, "checkout", "-q", "-b", name, "main")
    rev = project.add_migration(upgrade)
    git(project, "add", "-A")
    git(project, "commit", "-qm", name)
    return rev


def test_merge_and_rebase_conflicts_are_joined_into_one_proven_head(
    repo: Project, tmp_path: Path, pg_admin_url: URL
) -> None:
    main_head = repo.recorded_head()
    alice_db = URL.create("sqlite", database=str(tmp_path / "alice.db"))
    bob_db = URL.create("sqlite", database=str(tmp_path / "bob.db"))
    phone = "phone: Mapped[str | None] = mapped_column(String(20))"
    nickname = "nickname: Mapped[str | None] = mapped_column(String(32))"
    alice = branch(repo, "alice", phone, alice_db)
    bob = branch(repo, "bob", nickname, bob_db)

    # git merge, on Alice's branch: HEAD is hers, so her migration moves onto Bob's.
    git(repo, "checkout", "-q", "alice")
    assert git(repo, "merge", "-q", "bob", check=False).returncode != 0
    assert "<<<<<<<" in repo.head_file.read_text()
    (repo.root / "models" / "user.py").write_text(model_with_main(repo, phone, nickname))
    git(repo, "add", "models/user.py")
    done = repo.make("rebase", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}"})
    assert done.returncode == 0, done.stderr
    assert repo.heads() == [alice]
    assert repo.recorded_head() == alice
    assert down_revision(repo, alice) == bob
    assert down_revision(repo, bob) == main_head
    format_check = subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "ruff", "format", "--check", str(repo.versions)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert format_check.returncode == 0, format_check.stdout
    fresh = URL.create("sqlite", database=str(tmp_path / "fresh.db"))
    with pgserver.fresh_database(pg_admin_url) as postgresql:
        for url in (fresh, postgresql):
            repo.migrate(url)
            checked = repo.cli("check", url=url)
            assert checked.returncode == 0, checked.stderr

    # git rebase of Bob's branch onto Alice's: the sides invert, so Bob's migration moves onto hers.
    git(repo, "reset", "-q", "--hard")
    git(repo, "checkout", "-q", "bob")
    applied = repo.cli("upgrade", url=bob_db)  # Bob's own database applied his migration
    assert applied.returncode == 0, applied.stderr
    assert git(repo, "rebase", "alice", check=False).returncode != 0
    (repo.root / "models" / "user.py").write_text(model_with_main(repo, phone, nickname))
    git(repo, "add", "models/user.py")
    done = repo.cli("rebase", url=bob_db)
    assert done.returncode == 0, done.stderr
    assert repo.heads() == [bob]
    assert repo.recorded_head() == bob
    assert down_revision(repo, bob) == alice
    assert down_revision(repo, alice) == main_head
    # Bob's database stepped back below his migration (backed up), then took Alice's and his.
    assert current_revision(bob_db) == bob
    with engine_for(bob_db).connect() as connection:
        columns = {row[1] for row in connection.exec_driver_sql("PRAGMA table_info(users)")}
    assert {"phone", "nickname"} <= columns
    assert list((tmp_path / "backups").glob("bob.db*"))
    verified = repo.cli("verify", url=bob_db)
    assert verified.returncode == 0, verified.stderr


def model_with_main(project: Project, *columns: str) -> str:
    """models/user.py as main has it, plus ``columns``: the conflict in it resolved by hand."""
    main = git(project, "show", "main:models/user.py").stdout
    return main.replace(ANCHOR, "".join(f"    {column}\n" for column in columns) + "\n" + ANCHOR, 1)


def test_both_branches_adding_the_same_column_is_refused_naming_it(repo: Project) -> None:
    add_phone = 'op.add_column("users", sa.Column("phone", sa.String(20)))'
    alice = hand_branch(repo, "alice", add_phone)
    bob = hand_branch(repo, "bob", add_phone)
    git(repo, "checkout", "-q", "alice")
    assert git(repo, "merge", "-q", "bob", check=False).returncode != 0
    before = {path: path.read_bytes() for path in [repo.head_file, *repo.versions.glob("*.py")]}

    line = failed_line(repo.cli("rebase"))
    assert "both branches change users.phone" in line
    assert f"yours ({alice}) and theirs ({bob})" in line
    assert "nothing was changed" in line
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(repo.heads()) == sorted([alice, bob])


def test_bad_input_is_one_line_and_rewrites_nothing(repo: Project) -> None:
    main_head = repo.recorded_head()
    line = failed_line(repo.cli("rebase"))
    assert "there is nothing to rebase: the history has one head" in line
    assert "has no conflict" in line

    bob = hand_branch(repo, "bob", "pass")
    alice = hand_branch(repo, "alice", "pass")
    alice_two = repo.add_migration("pass")  # a branch of two migrations: both move
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "alice's second")
    assert git(repo, "merge", "-q", "bob", check=False).returncode != 0
    conflicted = repo.head_file.read_text()
    files = [repo.head_file, *repo.versions.glob("*.py")]

    def unchanged() -> bool:
        return all(path.read_text() == text for path, text in before.items())

    (repo.root / "README.md").write_text("edited while merging\n")  # unrelated, unstaged
    stray = repo.versions / "9999_stray.py"  # an untracked migration would join the graph
    stray.write_text('"""not committed"""\n')
    before = {path: path.read_text() for path in [*files, repo.root / "README.md", stray]}
    line = failed_line(repo.cli("rebase"))
    assert "changes the merge or rebase did not make (README.md, migrations/versions/9999_stray.py)" in line
    assert unchanged()
    git(repo, "checkout", "--", "README.md")
    stray.unlink()

    line = failed_line(repo.cli("rebase", "--onto=0123456789ab"))
    assert "onto=0123456789ab is not a revision of this history" in line

    repo.head_file.write_text("garbage\nmore garbage\n")
    before = {path: path.read_text() for path in files}
    line = failed_line(repo.cli("rebase"))
    assert "migrations/head.txt is unreadable" in line
    assert unchanged()
    repo.head_file.write_text(conflicted)

    # Alice's branch is HEAD in a merge: both her migrations move, the bottom one re-pointed.
    (repo.root / "notes.txt").write_text("untracked, and no migration: no reason to refuse\n")
    done = repo.cli("rebase")
    assert done.returncode == 0, done.stderr
    assert repo.heads() == [alice_two]
    assert repo.recorded_head() == alice_two
    assert [down_revision(repo, rev) for rev in (bob, alice, alice_two)] == [main_head, bob, alice]

    git(repo, "reset", "-q", "--hard")
    git(repo, "checkout", "-q", "-b", "three", "main")
    heads = [repo.add_migration("pass", down_revision=main_head) for _ in range(3)]
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "three heads")
    before = {path: path.read_text() for path in [repo.head_file, *repo.versions.glob("*.py")]}
    line = failed_line(repo.cli("rebase", f"--onto={heads[0]}"))
    assert f"the migration history has 3 heads ({', '.join(sorted(heads))})" in line
    assert unchanged()

    merge = "0000000merge"  # the first two heads joined by `alembic merge`: not linear any more
    (repo.versions / f"9999_{merge}_merge.py").write_text(
        f'"""merge"""\nrevision = {merge!r}\ndown_revision = {tuple(heads[:2])!r}\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a merge revision")
    before = {path: path.read_text() for path in [repo.head_file, *repo.versions.glob("*.py")]}
    line = failed_line(repo.cli("rebase", f"--onto={heads[2]}"))
    assert f"the history already has a merge revision ({merge})" in line
    assert unchanged()


def test_one_branch_altering_what_the_other_dropped_is_refused_naming_it(repo: Project) -> None:
    dropped = hand_branch(repo, "bob", 'with op.batch_alter_table("users") as b:\n    b.drop_column("email")')
    altered = hand_branch(
        repo,
        "alice",
        'with op.batch_alter_table("users") as b:\n    b.alter_column("email", type_=sa.String(400))',
    )
    assert git(repo, "merge", "-q", "bob", check=False).returncode != 0
    before = {path: path.read_bytes() for path in [repo.head_file, *repo.versions.glob("*.py")]}

    line = failed_line(repo.cli("rebase"))
    assert f"both branches change column email: yours ({altered}) and theirs ({dropped})" in line
    assert {path: path.read_bytes() for path in before} == before

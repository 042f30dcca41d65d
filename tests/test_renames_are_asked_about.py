"""``make migration`` asks "was it renamed?", and an accepted rename keeps every value.

On a terminal it asks, Django-style; without one it writes the drop and the
add and says how to answer with ``renames=``. Every generated rename is
deployed to SQLite and PostgreSQL with rows, checked, reverted and reapplied.
"""

from __future__ import annotations

import os
import select
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from dbtools import pgserver
from dbtools.commands import check, migration
from tests import workers
from tests.helpers import VENV, Project, base_env, engine_for, failed_line, insert_users

USERNAME = "    username: Mapped[str]"
EMAIL = "    email: Mapped[str] = mapped_column(String(320), unique=True)\n"
MAIL_OR_CONTACT = (
    "    mail: Mapped[str] = mapped_column(String(320))\n"
    "    contact: Mapped[str] = mapped_column(String(320))\n"
)
NOTES = '''"""Notes, and links to them."""

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.String(200), index=True)
    kind: Mapped[str] = mapped_column(sa.String(10), unique=True)


class Link(Base):
    __tablename__ = "links"

    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(sa.ForeignKey("notes.id"))
'''


@pytest.fixture
def deployed(project_copy: Project, pg_admin_url: URL) -> Iterator[dict[str, URL]]:
    """The project's app.db and a PostgreSQL database, both at head with users in them."""
    urls = {"sqlite": URL.create("sqlite", database=str(project_copy.root / "app.db"))}
    with pgserver.fresh_database(pg_admin_url) as pg:
        urls["postgresql"] = pg
        for url in urls.values():
            project_copy.migrate(url)
            insert_users(url, 5)
        yield urls


def edit(project: Project, relative: str, old: str, new: str) -> None:
    path = project.root / relative
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def generated(project: Project, message: str) -> Path:
    (path,) = project.versions.glob(f"*_{message}.py")
    return path


def column(url: URL, sql: str) -> list[object]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return sorted(row[0] for row in conn.exec_driver_sql(sql))
    finally:
        engine.dispose()


def deploy_and_round_trip(project: Project, urls: dict[str, URL], query: str, expected: list[object]) -> None:
    """Upgrade, values kept, `make check` clean, downgrade, upgrade: on both backends."""
    for backend, url in urls.items():
        project.migrate(url)
        assert column(url, query) == expected, backend
        assert workers.call(str(project.root), url, check.check) == 0, f"{backend}: models differ"
        project.migrate(url, "-1", action="downgrade")
        project.migrate(url)
        assert column(url, query) == expected, backend


def make_migration_on_a_terminal(
    project: Project, message: str, answer: str
) -> subprocess.CompletedProcess[str]:
    """``make migration`` on a terminal (stdin and stdout), the user typing ``answer``.

    Its stdout is what the terminal showed: the answer echoed, lines ending in CR LF.
    """
    main, terminal = os.openpty()
    os.write(main, f"{answer}\n".encode())
    try:
        process = subprocess.Popen(
            project.make_argv("migration", f"msg={message}"),
            cwd=project.root,
            env=base_env(),
            stdin=terminal,
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(terminal)
    shown = bytearray()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not select.select([main], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: no process holds the terminal any more
                break
            if not chunk:
                break
            shown += chunk
        stderr = process.communicate(timeout=10)[1]
    finally:
        process.kill()
        os.close(main)
    return subprocess.CompletedProcess(process.args, process.returncode, shown.decode(), stderr)


def lint(project: Project) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "dbtools", "lint"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_column_renamed_on_a_terminal_keeps_its_values(
    project_copy: Project, deployed: dict[str, URL]
) -> None:
    edit(project_copy, "models/user.py", USERNAME, "    login: Mapped[str]")

    declined = make_migration_on_a_terminal(project_copy, "login", "n")
    assert "Was users.username renamed to users.login (VARCHAR(64))? [y/N]" in declined.stdout
    assert 'drop_column("username")' in generated(project_copy, "login").read_text()
    refused = lint(project_copy)
    assert "drops column users.username" in refused.stderr
    assert refused.returncode == 1
    generated(project_copy, "login").unlink()

    accepted = make_migration_on_a_terminal(project_copy, "login", "y")
    assert accepted.returncode == 0, accepted.stderr
    text = generated(project_copy, "login").read_text()
    assert 'op.alter_column("users", "username", new_column_name="login")' in text
    # On PostgreSQL, expand then contract (tests/test_breaking_changes_expand_then_contract.py).
    assert "ADD CONSTRAINT uq_users_login UNIQUE USING INDEX uq_users_login" in text
    assert "drop_column" not in text
    assert 'phase = "contract"' in generated(project_copy, "login_contract").read_text()
    result = lint(project_copy)
    assert result.returncode == 0, result.stderr

    deploy_and_round_trip(project_copy, deployed, "SELECT login FROM users", [f"user{i}" for i in range(5)])


def test_without_a_terminal_it_writes_drop_and_add_and_says_how_to_answer(
    project_copy: Project, deployed: dict[str, URL]
) -> None:
    edit(project_copy, "models/user.py", USERNAME, "    login: Mapped[str]")
    result = project_copy.make("migration", "msg=login", stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    hint = (
        "Possible rename: users.username -> login (VARCHAR(64)), written as a drop and an add. "
        """To rename instead: make migration msg='login' renames="users.username=login\""""
    )
    assert hint in result.stdout
    assert "drops column users.username" in lint(project_copy).stderr
    generated(project_copy, "login").unlink()

    # The answer it suggested; then one that names no candidate writes nothing.
    answered = project_copy.make(
        "migration", "msg=login", "renames=users.username=login", stdin=subprocess.DEVNULL
    )
    assert answered.returncode == 0, answered.stderr
    assert "new_column_name" in generated(project_copy, "login").read_text()
    generated(project_copy, "login").unlink()
    generated(project_copy, "login_contract").unlink()  # its contract revision (expand/contract)
    wrong = project_copy.make("migration", "msg=login", "renames=users.email=login", stdin=subprocess.DEVNULL)
    line = failed_line(wrong)
    assert "renames= names users.email=login, which is not a rename candidate" in line
    assert "candidates: users.username=login" in line
    assert not list(project_copy.versions.glob("*_login.py"))


def test_with_stdout_redirected_it_asks_nothing_and_says_how_to_answer(project_copy: Project) -> None:
    """stdin a terminal, stdout a file: a question would wait, unseen, in the file."""
    project_copy.migrate(URL.create("sqlite", database=str(project_copy.root / "app.db")))
    edit(project_copy, "models/user.py", USERNAME, "    login: Mapped[str]")
    main, terminal = os.openpty()
    try:
        result = subprocess.run(
            project_copy.make_argv("migration", "msg=login"),
            cwd=project_copy.root,
            env=base_env(),
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(main)
    assert result.returncode == 0, result.stderr
    assert "[y/N]" not in result.stdout
    assert "To rename instead: make migration msg='login' renames=\"users.username=login\"" in result.stdout
    assert 'drop_column("username")' in generated(project_copy, "login").read_text()


def test_a_column_with_no_constraint_named_after_it_is_renamed_without_a_rebuild(
    project_copy: Project, deployed: dict[str, URL]
) -> None:
    edit(project_copy, "models/user.py", "    created_at: Mapped[", "    joined_at: Mapped[")
    sqlite_path = str(deployed["sqlite"].database)
    with sqlite3.connect(sqlite_path) as conn:
        before = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'users'").fetchone()
    answer = workers.call(
        str(project_copy.root),
        deployed["sqlite"],
        lambda c: migration.migration(c, "joined", "users.created_at=joined_at"),
    )
    assert answer == 0
    text = generated(project_copy, "joined").read_text()
    assert "batch_alter_table" not in text  # SQLite's ALTER TABLE ... RENAME COLUMN, in place
    project_copy.migrate(deployed["sqlite"])
    with sqlite3.connect(sqlite_path) as conn:
        after = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'users'").fetchone()
    assert after == before, "the users table was rebuilt"
    deploy_and_round_trip(project_copy, deployed, "SELECT count(joined_at) FROM users", [5])


def test_a_renamed_table_keeps_rows_foreign_keys_and_convention_names(
    project_copy: Project, deployed: dict[str, URL]
) -> None:
    (project_copy.root / "models" / "note.py").write_text(NOTES)
    edit(
        project_copy,
        "models/__init__.py",
        "from models.user import User\n",
        "from models.note import Link, Note\nfrom models.user import User\n",
    )
    root, sqlite = str(project_copy.root), deployed["sqlite"]
    assert workers.call(root, sqlite, lambda c: migration.migration(c, "notes")) == 0
    for url in deployed.values():
        project_copy.migrate(url)
        engine = engine_for(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO notes (id, body, kind) VALUES (1, 'milk', 'todo'), (2, 'eggs', 'idea')"
            )
            conn.exec_driver_sql("INSERT INTO links (note_id) VALUES (1), (2), (2)")
        engine.dispose()

    edit(project_copy, "models/note.py", '__tablename__ = "notes"', '__tablename__ = "memos"')
    edit(project_copy, "models/note.py", 'ForeignKey("notes.id")', 'ForeignKey("memos.id")')
    assert workers.call(root, sqlite, lambda c: migration.migration(c, "memos", "notes=memos")) == 0
    text = generated(project_copy, "memos").read_text()
    assert 'op.rename_table("notes", "memos")' in text
    assert "drop_table" not in text

    deploy_and_round_trip(project_copy, deployed, "SELECT body FROM memos", ["eggs", "milk"])
    for backend, url in deployed.items():
        inspector = sa.inspect(engine_for(url))
        indexes = [i["name"] for i in inspector.get_indexes("memos") if not i.get("duplicates_constraint")]
        assert indexes == ["ix_memos_body"], backend
        assert [u["name"] for u in inspector.get_unique_constraints("memos")] == ["uq_memos_kind"], backend
        assert inspector.get_pk_constraint("memos")["name"] == "pk_memos", backend
        (fk,) = inspector.get_foreign_keys("links")
        assert (fk["name"], fk["referred_table"]) == ("fk_links_note_id_memos", "memos"), backend
        assert column(url, "SELECT note_id FROM links") == [1, 2, 2], backend


def test_an_ambiguous_pair_is_not_guessed_and_a_rename_combines_with_other_changes(
    project_copy: Project, deployed: dict[str, URL]
) -> None:
    root, sqlite = str(project_copy.root), deployed["sqlite"]
    # email could be either new column: not guessed, nor offered.
    edit(
        project_copy,
        "models/user.py",
        EMAIL,
        MAIL_OR_CONTACT,
    )
    result = project_copy.make("migration", "msg=ambiguous", stdin=subprocess.DEVNULL)
    assert (
        "Not guessed: users.email -> users.mail or users.contact could pair more than one way"
        in result.stdout
    )
    assert "Possible rename" not in result.stdout
    assert "new_column_name" not in generated(project_copy, "ambiguous").read_text()
    generated(project_copy, "ambiguous").unlink()
    wrong = workers.call(root, sqlite, lambda c: migration.migration(c, "ambiguous", "users.email=mail"))
    assert wrong == 1

    # One rename beside an ordinary change, in one migration.
    edit(
        project_copy,
        "models/user.py",
        MAIL_OR_CONTACT,
        "    mail: Mapped[str] = mapped_column(String(320), unique=True)\n"
        "    bio: Mapped[str | None] = mapped_column(String(500))\n",
    )
    assert workers.call(root, sqlite, lambda c: migration.migration(c, "mail", "users.email=mail")) == 0
    text = generated(project_copy, "mail").read_text()
    assert 'new_column_name="mail"' in text
    assert 'add_column(sa.Column("bio"' in text
    deploy_and_round_trip(
        project_copy,
        deployed,
        "SELECT mail FROM users WHERE bio IS NULL",
        [f"user{i}@example.com" for i in range(5)],
    )


def test_a_name_postgresql_would_truncate_is_refused_before_anything_is_asked(project_copy: Project) -> None:
    sqlite = URL.create("sqlite", database=str(project_copy.root / "app.db"))
    project_copy.migrate(sqlite)
    long = "a" * 64  # 64 bytes: PostgreSQL keeps 63
    edit(project_copy, "models/user.py", USERNAME, f"    {long}: Mapped[str]")
    line = failed_line(
        project_copy.cli("migration", "-m", "long", "--renames", f"users.username={long}", url=sqlite)
    )
    assert f"the column of users '{long}' (64 bytes)" in line
    assert f"the constraint 'uq_users_{long}' (73 bytes)" in line
    assert "longer than PostgreSQL's 63-byte limit for names" in line
    assert "nothing was written. Shorten the name in the model" in line

    # A column name that fits, and the index the naming convention names after it, which does not.
    fits = "b" * 60
    edit(project_copy, "models/user.py", f"    {long}: Mapped[str]", USERNAME)
    edit(
        project_copy,
        "models/user.py",
        EMAIL,
        f"{EMAIL}    {fits}: Mapped[int | None] = mapped_column(index=True)\n",
    )
    line = failed_line(project_copy.cli("migration", "-m", "long", url=sqlite))
    assert f"the index 'ix_users_{fits}' (69 bytes)" in line
    assert "column" not in line
    assert not list(project_copy.versions.glob("*_long.py"))

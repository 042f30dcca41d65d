"""The destructive-change check fires on data-losing upgrades and passes safe ones."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from alembic.util import CommandError

from dbtools.autogenerate import portable
from dbtools.autogenerate.pgsql import USING_MARKER
from dbtools.commands.lint import lint
from dbtools.paths import alembic_config
from tests.helpers import ROOT, Project, failed_line, rendered

HEADER = 'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "r1"\ndown_revision = None\n\n'

DESTRUCTIVE = {
    "drop table": ('op.drop_table("users")', "drops table users"),
    "drop column": ('op.drop_column("users", "email")', "drops column users.email"),
    "drop column in a batch": (
        'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("email")',
        "drops column users.email",
    ),
    "drop constraint": (
        'op.drop_constraint(op.f("uq_users_email"), "users", type_="unique")',
        "drops constraint uq_users_email on users",
    ),
    "drop constraint in a batch": (
        'with op.batch_alter_table("users") as b:\n    b.drop_constraint("uq_users_email", type_="unique")',
        "drops constraint uq_users_email on users",
    ),
    "narrow a string": (
        'op.alter_column("users", "username", existing_type=sa.String(length=64), type_=sa.String(32))',
        "narrows column users.username from sa.String(length=64) to sa.String(32)",
    ),
    "integer to smaller integer": (
        'with op.batch_alter_table("users") as batch_op:\n'
        '    batch_op.alter_column("id", existing_type=sa.BigInteger(), type_=sa.Integer())',
        "narrows column users.id",
    ),
    "text to string": (
        'op.alter_column("users", "bio", existing_type=sa.Text(), type_=sa.String(200))',
        "narrows column users.bio",
    ),
    "type change without existing type": (
        'op.alter_column("users", "email", type_=sa.String(500))',
        "changes the type of users.email without existing_type",
    ),
    "not null": (
        'op.alter_column("users", "email", existing_type=sa.String(320), nullable=False)',
        "makes column users.email NOT NULL",
    ),
    "raw drop table": ('op.execute("DROP TABLE users")', "runs destructive SQL: DROP TABLE users"),
    "raw drop column in text()": (
        'op.execute(sa.text("UPDATE users SET a = 1; ALTER TABLE users DROP COLUMN a"))',
        "runs destructive SQL: ALTER TABLE users DROP COLUMN a",
    ),
    "in a helper upgrade calls": ("_cleanup()", "drops table old_users"),
}

SAFE = {
    "add a column": 'op.add_column("users", sa.Column("nickname", sa.String(32)))',
    "widen a string": (
        'op.alter_column("users", "username", existing_type=sa.String(length=64), type_=sa.String(128))'
    ),
    "string to text": 'op.alter_column("users", "bio", existing_type=sa.String(200), type_=sa.Text())',
    "integer to big integer": (
        'op.alter_column("users", "id", existing_type=sa.Integer(), type_=sa.BigInteger())'
    ),
    "allow nulls": 'op.alter_column("users", "email", existing_type=sa.String(320), nullable=True)',
    "already not null": (
        'op.alter_column("users", "email", existing_nullable=False, nullable=False, server_default="x")'
    ),
    "drop only in downgrade, words in comments and strings": (
        '# op.drop_table("users") is what downgrade() does\n'
        "op.execute(\"INSERT INTO log (note) VALUES ('we never DROP TABLE here')\")"
    ),
    "data migration": 'op.execute("UPDATE users SET email = lower(email)")',
    "rows deleted by a WHERE, a default dropped": (
        "op.execute(\"DELETE FROM users WHERE email LIKE '%@test.invalid'; "
        'ALTER TABLE users ALTER COLUMN email DROP DEFAULT")'
    ),
    "a semicolon and DROP inside a string": (
        "op.execute(\"INSERT INTO log (note) VALUES ('done; DROP TABLE users is for later')\")"
    ),
}
# SQL that loses data as PostgreSQL, and pg_dump, spell it too.
LOSSES = (
    "ALTER TABLE IF EXISTS users DROP COLUMN bio",
    "ALTER TABLE ONLY users DROP COLUMN bio",
    "ALTER TABLE users ADD COLUMN nick text, DROP COLUMN bio",
    "DELETE FROM users",
    "TRUNCATE users",
)


def write_migration(folder: Path, name: str, upgrade: str, extra: str = "") -> Path:
    body = textwrap.indent(upgrade, "    ")
    helper = '\n\ndef _cleanup() -> None:\n    op.drop_table("old_users")\n'
    source = (
        f"{HEADER}{extra}\n\ndef upgrade() -> None:\n{body}\n{helper}\n\n"
        'def downgrade() -> None:\n    op.drop_table("users")\n'
    )
    path = folder / f"{name.replace(' ', '_').replace(',', '')}.py"
    path.write_text(source)
    return path


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    """``python -m dbtools lint *paths`` in the checkout, forked (``Project.cli``)."""
    return Project(ROOT).cli("lint", *map(str, paths))


def check_in_process(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """``make lint``'s check on one file, in this process: the matrix below is pure parsing.

    Returns what it printed on stderr, and its FAILED line ("" when it passed).
    """
    try:
        lint(alembic_config(), [str(path)])
        failed = ""
    except CommandError as exc:
        failed = f"FAILED: {exc}"
    return capsys.readouterr().err, failed


@pytest.mark.parametrize("case", DESTRUCTIVE)
def test_fires_on_a_destructive_upgrade(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade, expected = DESTRUCTIVE[case]
    path = write_migration(tmp_path, case, upgrade)

    stderr, failed = check_in_process(path, capsys)

    assert f"{path}:" in stderr
    assert expected in stderr
    assert stderr.rstrip().endswith("[data loss]")
    assert failed.startswith("FAILED: 1 hazard(s) that the migration")


@pytest.mark.parametrize("case", SAFE)
def test_passes_a_safe_upgrade(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    stderr, failed = check_in_process(write_migration(tmp_path, case, SAFE[case]), capsys)
    assert failed == "", stderr


def test_the_cli_refuses_with_one_failed_line_and_passes_a_safe_file(tmp_path: Path) -> None:
    refused = check(write_migration(tmp_path, "drop", DESTRUCTIVE["drop column"][0]))
    assert refused.returncode == 1
    assert "drops column users.email [data loss]" in refused.stderr
    assert refused.stderr.splitlines()[-1].startswith("FAILED: 1 hazard(s) that the migration")

    passed = check(write_migration(tmp_path, "add", SAFE["add a column"]))
    assert passed.returncode == 0, passed.stderr
    assert "no unacknowledged data loss" in passed.stdout


def test_a_drop_in_any_alter_table_spelling_and_a_delete_of_every_row_are_data_loss(
    project: Project, tmp_path: Path
) -> None:
    """Issue 24, item 5: all but TRUNCATE passed make lint, and make upgrade ran them."""
    path = write_migration(tmp_path, "losses", "\n".join(f"op.execute({sql!r})" for sql in LOSSES))

    refused = project.cli("lint", str(path))

    assert failed_line(refused).startswith(f"FAILED: {len(LOSSES)} hazard(s) that the migration")
    for sql in LOSSES:
        assert f"upgrade() runs destructive SQL: {sql} [data loss]" in refused.stderr, sql


def test_the_marker_acknowledges_and_is_reported(tmp_path: Path) -> None:
    marker = 'acknowledge_destructive = "email moved to the accounts table in r0"'
    path = write_migration(tmp_path, "ack", 'op.drop_column("users", "email")', extra=marker)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "ack.py: destructive, acknowledged (email moved to the accounts table in r0)" in result.stdout

    empty = write_migration(
        tmp_path, "empty", 'op.drop_column("users", "email")', extra="acknowledge_destructive = ''"
    )
    assert check(empty).returncode == 1


def test_the_project_migrations_pass() -> None:
    result = check()
    assert result.returncode == 0, result.stderr


def test_an_autogenerated_drop_is_caught_until_the_template_marker_is_filled(project_copy: Project) -> None:
    assert project_copy.cli("upgrade").returncode == 0
    model = project_copy.root / "models" / "user.py"
    source = model.read_text()
    email = "    email: Mapped[str] = mapped_column(String(320), unique=True)\n"
    model.write_text(source.replace(email, ""))
    assert project_copy.cli("migration", "--message=drop email").returncode == 0
    (script,) = project_copy.versions.glob("*_drop_email.py")

    caught = check(script)
    assert caught.returncode == 1
    assert "drops column users.email" in caught.stderr
    assert "drops constraint uq_users_email on users" in caught.stderr
    assert "FAILED: 2 hazard(s)" in caught.stderr

    slot = '# acknowledge_destructive = "why losing this data is intended"'
    assert slot in script.read_text()
    script.write_text(
        script.read_text().replace(slot, 'acknowledge_destructive = "emails now live in accounts"')
    )
    assert check(script).returncode == 0


# The users.role column of the evolution corpus, as a migration writes it.
ROLE = (
    "op.execute(\"CREATE TYPE user_role AS ENUM ('member', 'admin')\")\n"
    'role = sa.Enum("member", "admin", name="user_role", create_type=False)\n'
    'op.add_column("users", sa.Column("role", role))'
)
NO_ROLE = 'op.drop_column("users", "role")\nop.execute("DROP TYPE user_role")'
GUEST = portable.EnumValuesOp(
    "user_role", ("member", "admin"), ("member", "admin", "guest"), (("users", "role", None),)
)


def test_an_enum_value_added_passes_the_lint_and_one_removed_names_the_rows_it_orphans(
    project_copy: Project,
) -> None:
    project_copy.add_migration(ROLE, NO_ROLE)
    project_copy.add_migration(rendered(GUEST), rendered(GUEST.reverse()))
    # ALTER TYPE ... ADD VALUE: catalog only, nothing to acknowledge, for data loss or for locks.
    added = lint_project(project_copy)
    assert added.returncode == 0, added.stderr

    revision = project_copy.add_migration(rendered(GUEST.reverse()), rendered(GUEST))
    (path,) = project_copy.versions.glob(f"*{revision}*")
    removed = lint_project(project_copy)
    assert removed.returncode == 1
    orphans = "removes 'guest' from enum type user_role, orphaning the rows where users.role = 'guest'"
    assert re.search(rf"{re.escape(path.name)}:\d+: upgrade\(\) {re.escape(orphans)}", removed.stderr)


def test_an_enum_swap_the_downgrade_does_not_explain_names_every_other_value(tmp_path: Path) -> None:
    swap = rendered(GUEST.reverse())
    stderr = check(write_migration(tmp_path, "swap", swap)).stderr
    assert "replaces enum type user_role with ('member', 'admin'), orphaning the rows where " in stderr
    assert "users.role NOT IN ('member', 'admin')" in stderr


def lint_project(project: Project) -> subprocess.CompletedProcess[str]:
    """``make lint``'s own review (data loss and squawk's lock review) of every migration of ``project``."""
    return project.cli("lint")


def test_a_type_change_with_no_known_cast_is_refused_until_its_using_is_written(
    project_copy: Project,
) -> None:
    """PostgreSQL casts boolean to date by no rule autogenerate knows: the USING is the author's to write."""
    project_copy.add_migration(
        'op.add_column("users", sa.Column("verified", sa.Boolean(), nullable=True))',
        'with op.batch_alter_table("users") as batch_op:\n    batch_op.drop_column("verified")',
    )
    assert project_copy.cli("upgrade").returncode == 0
    model = project_copy.root / "models" / "user.py"
    model.write_text(
        model.read_text()
        .replace("from sqlalchemy import String", "from sqlalchemy import Date, String")
        .replace(
            "    def __repr__",
            "    verified: Mapped[datetime | None] = mapped_column(Date)\n\n    def __repr__",
        )
    )
    assert project_copy.cli("migration", "--message=verified on").returncode == 0
    (script,) = project_copy.versions.glob("*_verified_on.py")
    text = script.read_text()
    assert f"{USING_MARKER} users.verified from BOOLEAN to DATE\n" in text

    # The type change is data loss too (acknowledged below); the marker is not acknowledgeable.
    acknowledged = text.replace(
        '# acknowledge_destructive = "why losing this data is intended"',
        'acknowledge_destructive = "a flag becomes the day it was set"',
    )
    script.write_text(acknowledged)
    caught = check(script)
    assert caught.returncode == 1
    refused = [line for line in caught.stderr.splitlines() if line.endswith("[USING needed]")]
    assert len(refused) == 2, caught.stderr  # the upgrade's change, and the downgrade's back
    assert ": users.verified from BOOLEAN to DATE: PostgreSQL does not cast it by itself" in refused[0]
    assert ": users.verified from DATE to BOOLEAN: PostgreSQL does not cast it by itself" in refused[1]

    # What the author does: delete the marker's three lines, and write each USING.
    marker = (USING_MARKER, "# PostgreSQL does not cast it by itself", "# then delete these three lines")
    written = "".join(
        line for line in acknowledged.splitlines(keepends=True) if not line.lstrip().startswith(marker)
    )
    for given, cast in {
        "type_=sa.Date(), existing_nullable=True": "CASE WHEN verified THEN current_date END",
        "type_=sa.Boolean(), existing_nullable=True": "verified IS NOT NULL",
    }.items():
        assert given in written
        written = written.replace(given, f'{given}, postgresql_using="{cast}"')
    script.write_text(written)
    passed = check(script)
    assert passed.returncode == 0, passed.stderr

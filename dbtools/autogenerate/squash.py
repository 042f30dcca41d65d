"""``make squash``'s files: which migrations a squash replaces, the file it writes, and the prune.

The squash is proved and its old files' checksums compared by the command, with
the runtime's tools; this module only reads the history and writes files.

Everything that can refuse is read before anything is written (``plan``):
the range must be one straight line from the first migration (no branch or
merge in it), hold no earlier squash, and no migration whose data steps would
be lost unless the user says so; the work tree's ``migrations/`` must be
clean, so that git can put back whatever the squash or the prune changes.

A data step is a statement in ``upgrade()`` that writes rows rather than
schema. Rows *inserted* (``op.bulk_insert``, ``INSERT``) are reference data:
they are in the scratch database the squash is dumped from, so the squash
carries them over. Any other (``UPDATE``, ``DELETE``, hand-written Python on
``op.get_bind()``) changes rows an application wrote: a new database has none,
so the squash leaves those steps out, and says so, refusing unless
``allow_data_loss=1`` (Django's ``elidable``, made explicit).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError

from dbtools import paths
from dbtools.paths import SQUASH_SUFFIX

NOTHING = "nothing was written"
# The first word of a statement that changes rows, not schema.
_ROW_WRITES = ("UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY", "WITH")


@dataclass(frozen=True)
class DataStep:
    revision: str
    what: str  # the statement's first words, or what the Python does
    inserts: bool  # reference rows: carried over by the dump

    def describe(self) -> str:
        return f"{self.revision} ({self.what})"


@dataclass(frozen=True)
class Plan:
    """What ``make squash upto=<rev>`` will replace, read before anything is written."""

    upto: str
    replaced: list[Script]  # oldest first; the last is ``upto``
    data_steps: list[DataStep] = field(default_factory=list)
    commits_midway: list[str] = field(default_factory=list)  # revisions with an autocommit_block()

    @property
    def left_out(self) -> list[DataStep]:
        return [step for step in self.data_steps if not step.inserts]

    @property
    def carried(self) -> list[DataStep]:
        return [step for step in self.data_steps if step.inserts]

    def report(self, path: Path, *, proved_on_postgresql: bool) -> list[str]:
        """What make squash says once it wrote the file."""
        backends = "SQLite and PostgreSQL" if proved_on_postgresql else "SQLite"
        lines = [
            f"Wrote {path}: {len(self.replaced)} migrations up to {self.upto}.",
            f"Proved: on {backends}, an empty database built by the squash dumps the same as one built by "
            "the migrations it replaces.",
        ]
        if self.carried:
            lines.append(
                f"Reference rows carried over from: {', '.join(step.describe() for step in self.carried)}."
            )
        if self.left_out:
            lines.append(
                f"Left out (allow_data_loss=1): {', '.join(step.describe() for step in self.left_out)}."
            )
        if self.commits_midway:
            lines.append(
                f"Supported: {', '.join(self.commits_midway)} commit(s) midway (autocommit_block); "
                "the squash builds an empty database in one transaction, which needs none of that."
            )
        lines.append("The old files stay: once every database has passed it, `make squash prune=1`.")
        return lines

    def file_name(self) -> str:
        """Named as the first replaced file, so that once pruned it sorts where the history began."""
        first = Path(str(self.replaced[0].path)).name
        prefix = first.split("-", 1)[0] if "-" in first else "0000"
        return f"{prefix}-{self.upto}_squash_of_{len(self.replaced)}_migrations{SQUASH_SUFFIX}"


def plan(config: Config, upto: str, *, allow_data_loss: bool) -> Plan:
    """The range ``make squash upto=<rev>`` replaces; a ``CommandError`` (nothing written) when it cannot."""
    refuse_dirty(paths.root_of(config))
    script = ScriptDirectory.from_config(config)
    pending = sorted(Path(script.versions).glob(f"*{SQUASH_SUFFIX}"))
    if pending:
        raise CommandError(
            f"a squash is already waiting for its old files to be pruned ({pending[0].name}); a squash of a "
            "squash is not supported. Once every database has passed its revision, `make squash prune=1`, "
            f"then squash again; {NOTHING}"
        )
    if not upto:
        raise CommandError(f"say how far to squash: make squash upto=<revision>; {NOTHING}")
    if upto == "base":
        raise CommandError(f"upto=base is before every migration, so there is nothing to squash; {NOTHING}")
    try:
        found = script.get_revision(upto)
    except (ResolutionError, CommandError):
        found = None
    if not isinstance(found, Script):
        raise CommandError(
            f"upto={upto} is not a revision of this history; `make history` lists them; {NOTHING}"
        )
    replaced = list(reversed(list(script.walk_revisions("base", found.revision))))
    merges = [rev.revision for rev in replaced if rev.is_merge_point]
    if merges:  # looked for first: every merge's range holds the branch point below it
        raise CommandError(
            f"upto={found.revision} would squash the merge revision {merges[-1]}: a squash replaces "
            f"one straight line of migrations; squash up to a revision before the branches; {NOTHING}"
        )
    for rev in replaced:
        if rev is not found and len(rev.nextrev) > 1:
            raise CommandError(
                f"upto={found.revision} is inside a branch: the history splits after {rev.revision} "
                f"({', '.join(sorted(rev.nextrev))}); squash up to {rev.revision} or earlier; {NOTHING}"
            )
        if isinstance(getattr(rev.module, "replaces", None), dict):
            raise CommandError(
                f"upto={found.revision} would squash {rev.revision}, itself a squash: a squash of a squash "
                f"is not supported (databases record it by its own checksum); {NOTHING}"
            )
    if len(replaced) < 2:
        raise CommandError(
            f"upto={found.revision} is the first migration: there is nothing to squash; {NOTHING}"
        )
    steps = [step for rev in replaced for step in data_steps(rev)]
    the_plan = Plan(
        found.revision,
        replaced,
        steps,
        [rev.revision for rev in replaced if "autocommit_block" in _upgrade_source(rev)],
    )
    if the_plan.left_out and not allow_data_loss:
        listed = "; ".join(step.describe() for step in the_plan.left_out)
        raise CommandError(
            f"the squash would leave out data steps that change existing rows: {listed}. A new database "
            "has no such rows, so only a database built by the squash is affected, and reference rows "
            "that migrations insert are carried over; if those steps did nothing else, say so with "
            f"allow_data_loss=1; {NOTHING}"
        )
    return the_plan


def refuse_dirty(root: Path) -> None:
    """Refuse uncommitted changes under migrations/: git must be able to put back what the squash changes."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain=v1", "--untracked-files=all", "--", "migrations"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return
    if status.returncode != 0:  # not a git work tree: nothing to protect
        return
    # Python's bytecode is no change of the user's: written by any run, removed when stale
    # (dbtools.runtime.bytecode), whether or not the repository ignores it.
    changed = [
        line[3:]
        for line in status.stdout.splitlines()
        if line.strip() and "__pycache__/" not in line and not line.rstrip().endswith(".pyc")
    ]
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise CommandError(
            f"migrations/ has uncommitted changes ({shown}); commit or stash them first, so that the "
            f"squash is reviewed alone and git can undo it; {NOTHING}"
        )


def _upgrade_function(tree: ast.Module) -> ast.FunctionDef | None:
    return next(
        (node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"), None
    )


def _upgrade_source(rev: Script) -> str:
    source = Path(str(rev.path)).read_text(encoding="utf-8")
    function = _upgrade_function(ast.parse(source))
    return ast.get_source_segment(source, function) or "" if function else ""


def data_steps(rev: Script) -> list[DataStep]:
    """The statements of ``rev``'s upgrade() that write rows, in order."""
    function = _upgrade_function(ast.parse(Path(str(rev.path)).read_text(encoding="utf-8")))
    if function is None:
        return []
    found = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        if name == "bulk_insert":
            found.append(DataStep(rev.revision, "op.bulk_insert", inserts=True))
        elif name in ("get_bind", "exec_driver_sql") or (name == "execute" and not _is_op(node.func)):
            found.append(DataStep(rev.revision, f"hand-written Python: {name}()", inserts=False))
        elif name == "execute":
            sql = _literal_sql(node)
            if sql is None:
                found.append(DataStep(rev.revision, "op.execute() of SQL built at run time", inserts=False))
                continue
            first = (sql.split() or [""])[0].upper()
            if first == "INSERT":
                found.append(DataStep(rev.revision, _words(sql), inserts=True))
            elif first in _ROW_WRITES:
                found.append(DataStep(rev.revision, _words(sql), inserts=False))
    return found


def _is_op(func: ast.Attribute) -> bool:
    return isinstance(func.value, ast.Name) and func.value.id == "op"


def _literal_sql(call: ast.Call) -> str | None:
    """The SQL of ``op.execute("...")`` or ``op.execute(sa.text("..."))``; None when built at run time."""
    argument = call.args[0] if call.args else None
    if isinstance(argument, ast.Call) and argument.args:  # sa.text("...")
        argument = argument.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    return None


def _words(sql: str) -> str:
    words = " ".join(sql.split())
    return words if len(words) <= 60 else words[:57] + "..."


def render(
    the_plan: Plan, replaces: Mapping[str, str], sqlite: Sequence[str], postgresql: str | None, root: Path
) -> str:
    """The squash migration's text, formatted by ruff as ``make migration`` leaves a file."""
    count = len(the_plan.replaced)
    first, last = the_plan.replaced[0].revision, the_plan.upto
    listed = "\n".join(f"    {revision!r}: {checksum!r}," for revision, checksum in replaces.items())
    statements = "\n".join(f"    {statement!r}," for statement in sqlite)
    if postgresql is None:  # MIGRATION_BACKENDS=sqlite
        pg = "None  # written with MIGRATION_BACKENDS=sqlite: SQLite only"
    else:
        pg = '"""\n' + postgresql.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '"""'

    text = f'''"""Squash of the {count} migrations from {first} to {last}: their schema and reference rows.

Revision ID: {last}
Revises:
Create Date: {datetime.now(UTC).replace(tzinfo=None)}

Written by `make squash upto={last}` from scratch databases the old migrations built, and proved
to build the same (README "Squashing a long history"). A new database runs this instead of them;
one part-way through them continues through them. It carries the revision id of the last one.
"""

# ruff: noqa: E501

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = {last!r}
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The migrations this one replaces, oldest first, each with the checksum of its file when squashed:
# a database that applied them through those files stays valid once they are pruned.
replaces: dict[str, str] = {{
{listed}
}}

# SQLite's DDL as it stored it, then the rows, then the indexes.
SQLITE: tuple[str, ...] = (
{statements}
)

# pg_dump's DDL and rows (INSERTs, each sequence's setval), in the run's search_path.
POSTGRESQL: str | None = {pg}


def upgrade() -> None:
    # Colons escaped: the text holds no bind parameters.
    if op.get_context().dialect.name == "postgresql":
        if POSTGRESQL is None:
            raise CommandError(
                "this squash was written with MIGRATION_BACKENDS=sqlite and builds SQLite databases only; "
                "nothing was changed"
            )
        op.execute(sa.text(POSTGRESQL.replace(":", "\\\\:")))
        return
    for statement in SQLITE:
        op.execute(sa.text(statement.replace(":", "\\\\:")))


def downgrade() -> None:
    raise CommandError(
        "this database was built by the squash of the {count} migrations up to {last}, in one step: "
        "it cannot step below {last}; nothing was changed. Restore a backup (make restore) or "
        "rebuild the database instead"
    )
'''
    return _formatted(text, root)


def _formatted(text: str, root: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", "--stdin-filename", "squash.py", "-"],
        input=text,
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(f"ruff could not format the squash: {' '.join(done.stderr.split())}; {NOTHING}")
    return done.stdout


def write(config: Config, the_plan: Plan, text: str) -> Path:
    path = Path(ScriptDirectory.from_config(config).versions) / the_plan.file_name()
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class Prune:
    """What ``make squash prune=1`` will do, read before anything is deleted."""

    squash: Path  # the pending squash
    replaces: dict[str, str]  # each replaced revision -> its file's checksum when the squash was proved
    files: dict[str, Path]  # the replaced revisions whose files are still there

    @property
    def target(self) -> Path:
        """The squash's name once it is a migration Alembic loads."""
        return self.squash.with_name(self.squash.name.removesuffix(SQUASH_SUFFIX) + ".py")


def plan_prune(config: Config) -> Prune:
    """The pending squash and the old files it replaces; a ``CommandError`` when there is none."""
    refuse_dirty(paths.root_of(config))
    script = ScriptDirectory.from_config(config)
    pending = sorted(Path(script.versions).glob(f"*{SQUASH_SUFFIX}"))
    if not pending:
        raise CommandError(
            "there is no squash to prune; write one first with make squash upto=<revision>; "
            "nothing was changed"
        )
    (squash,) = pending[:1]
    replaces = _replaces_in(squash)
    files = {}
    for revision in replaces:
        with contextlib.suppress(ResolutionError, CommandError):
            rev = script.get_revision(revision)
            if isinstance(rev, Script):
                files[revision] = Path(str(rev.path))
    return Prune(squash, replaces, files)


def prune(the_prune: Prune) -> None:
    """Delete the old files and make the squash a migration of its own (git undoes both)."""
    for path in the_prune.files.values():
        path.unlink()
        _forget_bytecode(path)
    the_prune.squash.rename(the_prune.target)


def _replaces_in(path: Path) -> dict[str, str]:
    """The squash's ``replaces``, read without running the file."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if (
                any(isinstance(t, ast.Name) and t.id == "replaces" for t in targets)
                and node.value is not None
            ):
                value = ast.literal_eval(node.value)
                if isinstance(value, dict):
                    return {str(k): str(v) for k, v in value.items()}
    raise CommandError(
        f"{path.name} is not a squash written by make squash (no replaces); nothing was changed"
    )


def _forget_bytecode(path: Path) -> None:
    with contextlib.suppress(NotImplementedError, ValueError, OSError):
        Path(importlib.util.cache_from_source(str(path))).unlink()
    importlib.invalidate_caches()

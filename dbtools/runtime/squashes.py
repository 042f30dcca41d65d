"""How a run sees a squash: Django's ``replaces``, for Alembic's graph.

``make squash upto=<R>`` writes one migration that builds, on an empty
database, the schema and reference rows that every migration up to ``R``
built. It carries ``R``'s own revision id, no parent, and ``replaces``: each
replaced revision with the checksum its file had. Until the old files are
pruned it is kept beside them as ``<name>.py.squash``, a name Alembic does not
load, so Alembic's own history is unchanged, and each database is given the
history that fits it, as Django's loader does:

- an empty database, and one whose record of ``R`` is the squash's checksum
  (it came through the squash), follow the *squashed* history: the squash in
  place of every revision up to ``R``, then what follows ``R``;
- a database part-way through the range, or at ``R`` or past it through the
  old files, follows the old history, joining at ``R``: nothing new for it.

``make squash prune=1`` renames the file to ``.py`` and deletes the old ones:
Alembic's graph is then the squashed one. A database still inside the range
is refused in one line (its revision is in ``replaces``), and one that came
through the old files keeps matching (``replaces`` holds the checksum its
record of ``R`` has). The squash's downgrade() refuses: a database built by it
never had the steps below ``R``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError, RevisionMap
from alembic.util import CommandError

from dbtools.paths import CHECKSUM_TABLE, SQUASH_SUFFIX
from dbtools.runtime.digest import checksum_of, matches, read_script


class Squash(NamedTuple):
    """One squash migration, pending (beside the old files) or pruned (in their place)."""

    script: Script
    replaces: dict[str, str]  # oldest first: each replaced revision -> its file's checksum then

    @property
    def upto(self) -> str:
        return self.script.revision

    @property
    def path(self) -> Path:
        return Path(str(self.script.path))

    def inside(self, destination: object) -> bool:
        """Whether a run's destination (a revision id, or a prefix of one) is below the squash."""
        if not isinstance(destination, str) or len(destination) < 4:
            return False
        below = [revision for revision in self.replaces if revision != self.upto]
        return any(revision.startswith(destination) for revision in below)

    def came_through(self, record: Mapping[str, str]) -> bool:
        """Whether a database with these checksum records was built by this squash."""
        recorded = record.get(self.upto)
        return recorded is not None and matches(recorded, read_script(self.path))


def replaces_of(script: Script) -> dict[str, str] | None:
    """A squash migration's ``replaces``; None for any other migration."""
    found = getattr(script.module, "replaces", None)
    return dict(found) if isinstance(found, dict) else None


def load(path: Path) -> Squash:
    """A squash file, pending or not, as Alembic would load a migration."""
    name = f"_squash_{path.name.split('.')[0].replace('-', '_')}"
    spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, str(path)))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    replaces = getattr(module, "replaces", None)
    if not isinstance(replaces, dict) or getattr(module, "revision", None) not in replaces:
        raise CommandError(f"{path.name} is not a squash written by `make squash`; nothing was changed")
    return Squash(Script(module, module.revision, path), dict(replaces))


def pending(script: ScriptDirectory) -> Squash | None:
    """The squash kept beside the files it replaces, if there is one."""
    # Every run asks: a listing, not a glob (which compiles a pattern in each process).
    versions = Path(script.versions)
    listed = versions.iterdir() if versions.is_dir() else ()
    found = sorted(path for path in listed if path.name.endswith(SQUASH_SUFFIX))
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise CommandError(
            f"migrations/versions holds {len(found)} pending squashes ({names}); keep one "
            "(`make squash prune=1` settles it) and delete the others; nothing was changed"
        )
    return load(found[0]) if found else None


def pruned(script: ScriptDirectory) -> list[Squash]:
    """The squashes that are part of Alembic's own graph (their old files gone)."""
    return [
        Squash(rev, replaces)
        for rev in script.walk_revisions()
        for replaces in [replaces_of(rev)]
        if replaces is not None
    ]


def squashed_map(script: ScriptDirectory, squash: Squash) -> RevisionMap:
    """The history with ``squash`` in place of every revision it replaces."""
    kept = [rev for rev in script.walk_revisions() if rev.revision not in squash.replaces]
    return RevisionMap(lambda: [*kept, squash.script])


def follow(script: ScriptDirectory, squash: Squash) -> None:
    """Make ``script`` (one run's ScriptDirectory) answer with the squashed history."""
    script.revision_map = squashed_map(script, squash)


def adopt(
    script: ScriptDirectory,
    heads: Iterable[str],
    record: Callable[[], Mapping[str, str]],
    destination: object = None,
) -> Squash | None:
    """Give ``script`` the history the database at ``heads`` follows; the squash it follows, if one.

    ``record`` reads the database's checksum records, only when a squash is pending. An empty
    database sent to a revision inside the range (``destination``) takes the old files there. Refuses,
    in one line, a database stuck inside a pruned range.
    """
    heads = tuple(heads)
    refuse_pruned(script, heads)
    squash = pending(script)
    if (
        squash is None
        or (heads and not squash.came_through(record()))
        or (not heads and squash.inside(destination))
    ):
        if heads and isinstance(destination, str):
            for one in pruned(script):
                refuse_downgrade(script, one, heads, destination)
        return None
    follow(script, squash)
    if heads and isinstance(destination, str):
        refuse_downgrade(script, squash, heads, destination)
    return squash


def refuse_downgrade(
    script: ScriptDirectory, squash: Squash, heads: tuple[str, ...], destination: str
) -> None:
    """A downgrade that would revert the squash, refused before its first step runs.

    A database built by the squash never had the steps below it (and once pruned, nobody has their
    files); stopping at the squash's own downgrade() would leave the steps above it reverted, and
    committed where they commit midway. A revision the squash replaced is no revision of the
    squashed history at all: refused the same way, not with Alembic's "Can't locate revision".
    """
    if squash.inside(destination):
        raise _below(squash, destination)
    try:
        steps = script._downgrade_revs(destination, heads)  # type: ignore[arg-type]
    except Exception:  # not a downgrade target from here: an upgrade, which Alembic checks itself
        return
    if any(step.revision.revision == squash.upto for step in steps):
        raise _below(squash, destination)


def _below(squash: Squash, destination: str) -> CommandError:
    return CommandError(
        f"rev={destination} is below {squash.upto}, the squash of {len(squash.replaces)} migrations this "
        f"database went through: it was built in one step and cannot step below {squash.upto}; nothing "
        f"was changed. Downgrade to {squash.upto} at most, or restore a backup (make restore)"
    )


def came_through_file(database: Path, squash: Squash) -> bool:
    """``came_through`` for a SQLite file read with the standard library (the fast path's record)."""
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            rows = conn.execute(
                f"SELECT revision, checksum FROM {CHECKSUM_TABLE} WHERE revision = ?",
                (squash.upto,),
            ).fetchall()
    except sqlite3.Error:  # no records (nothing applied): the fast path's record is simply not written
        return False
    return squash.came_through(dict(rows))


def refuse_pruned(script: ScriptDirectory, heads: Iterable[str]) -> None:
    """A database at a revision a pruned squash replaced: say what it needs, not "Can't locate revision"."""
    for head in heads:
        try:
            script.revision_map.get_revision(head)
            continue  # a revision of the history (a partial id too: Alembic's own refusal follows)
        except ResolutionError:
            pass
        for squash in pruned(script):
            if head in squash.replaces:
                order = list(squash.replaces)
                needs = order[order.index(head) + 1 :]
                which = needs[0] if len(needs) == 1 else f"{needs[0]} to {squash.upto}"
                raise CommandError(
                    f"the database is at {head}, inside the {len(order)} migrations squashed into "
                    f"{squash.upto} whose files were pruned; it still needs {len(needs)} of them "
                    f"({which}). Upgrade it to {squash.upto} from a checkout before the "
                    f"prune (`git log --diff-filter=D -- migrations/versions` finds it; `make upgrade "
                    f"rev={squash.upto}`), then run make upgrade here; nothing was changed"
                )


def refuse_changed_since(replaces: Mapping[str, str], files: Mapping[str, Path]) -> None:
    """Before a prune: the old files must be those the squash was proved against (``replaces``)."""
    edited = [
        revision for revision, path in files.items() if checksum_of(read_script(path)) != replaces[revision]
    ]
    if edited:
        raise CommandError(
            f"migration(s) {', '.join(edited)} changed since the squash was written and proved; "
            "put them back (git checkout), or delete the squash and make it again; nothing was changed"
        )


def accepts(rev: Script, recorded: str) -> bool:
    """A pruned squash's record taken through the old file of its revision still matches."""
    replaces = replaces_of(rev)
    return replaces is not None and replaces.get(rev.revision) == recorded

"""``python -m dbtools <command>``: the project's one command line; the Makefile calls it.

Each command is the function of the same name in ``dbtools/commands/<command>.py``,
named after its make target, and is imported only when it runs, so a no-op
``upgrade`` pays for nothing else. An expected failure (a ``CommandError``, or a
fleet's ``FleetError``) is printed here, and only here, as one ``FAILED:`` line on
stderr, with exit status 1.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Any

from dbtools import catalog
from dbtools.runtime import bytecode, fastpath, nochange

if TYPE_CHECKING:
    import argparse


def build_parser() -> argparse.ArgumentParser:
    import argparse

    # The docstring's first paragraph, without its reStructuredText quotes (``...``).
    description = __doc__.split("\n\n")[0].replace("``", "")
    parser = argparse.ArgumentParser(prog="python -m dbtools", description=description)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str) -> argparse.ArgumentParser:
        summary = catalog.by_name(name).summary
        return commands.add_parser(name, help=summary, description=summary)

    upgrade = add("upgrade")
    upgrade.add_argument("revision", nargs="?", default="head", help="the revision to reach (default: head)")
    upgrade.add_argument(
        "--out-of-order",
        default="0",
        metavar="{0,1}",
        help="1: first run the migrations this database skipped (a branch re-pointed after it ran)",
    )
    upgrade.add_argument(
        "--phase",
        default="",
        metavar="{expand}",
        help="expand: stop before the first pending contract revision (a rolling deploy's first step)",
    )
    add("downgrade").add_argument(
        "revision", nargs="?", default="-1", help="the revision to reach (default: -1, one step back)"
    )
    migration = add("migration")
    migration.add_argument("-m", "--message", required=True, help="what changed, e.g. 'add display name'")
    migration.add_argument(
        "--renames", default="", help="renames to write, e.g. 'users.name=display_name accounts=users'"
    )
    add("rebase").add_argument(
        "--onto", default=None, help="the other branch's head, when no git merge or rebase is in progress"
    )
    squash = add("squash")
    squash.add_argument("--upto", default="", help="the last revision the squash replaces")
    squash.add_argument("--prune", default="0", metavar="{0,1}", help="1: delete the files a squash replaced")
    squash.add_argument(
        "--allow-data-loss", default="0", metavar="{0,1}", help="1: leave out data steps that change rows"
    )
    for name in ("current", "repair", "stamp"):
        add(name)
    for command in (upgrade, add("status"), add("check"), add("verify")):
        command.add_argument(
            "--fleet", default=None, metavar="FILE", help="a fleet file (TOML): every database it lists"
        )
        command.add_argument(
            "--report", default=None, metavar="PATH", help="with --fleet: also write the report as JSON here"
        )
    add("rehearse").add_argument(
        "revision", nargs="?", default="head", help="the revision to reach (default: head)"
    )
    add("restore").add_argument("file", nargs="?", help="the backup to restore (default: the newest)")
    add("schema").add_argument(
        "--check", action="store_true", help="print the diff and fail instead of writing"
    )
    add("lint").add_argument(
        "paths", nargs="*", help="migration files or folders (default: migrations/versions)"
    )
    pgserver = add("pgserver")
    pgserver.add_argument("action", choices=("start", "stop"))
    pgserver.add_argument("directory", help="where the server keeps its files")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    done = fastpath.nothing_to_do(argv)  # before SQLAlchemy or Alembic is imported
    if done:
        print(f"INFO  [dbtools.runtime.fastpath] {done}", file=sys.stderr)
        return 0
    unchanged = nochange.answer(argv)  # make check, make migration: nothing changed since the last look
    if unchanged:
        print(unchanged)
        print(f"INFO  [dbtools.runtime.nochange] {nochange.WHY}", file=sys.stderr)
        return 0
    bytecode.drop_racy()  # before any model or migration file is imported
    fleet_line = as_make_writes_a_fleet(argv)
    options = fleet_line or vars(build_parser().parse_args(argv))  # argparse: the standard library
    name = options.pop("command")
    if name in FLEET_COMMANDS:
        fleet, report = options.pop("fleet"), options.pop("report")
        if fleet or report:
            # Before Alembic: a fleet already at head imports it only if some target needs a run.
            return _fleet(name, fleet, report, options)
    import importlib

    from alembic.util import CommandError

    from dbtools import paths, settings

    command = getattr(importlib.import_module(f"dbtools.commands.{name}"), name)
    try:
        settings.check_all()  # a malformed MIGRATION_* variable fails every command, not only env.py's
        command(paths.alembic_config(), **options)
    except CommandError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    return 0


def as_make_writes_a_fleet(argv: list[str]) -> dict[str, Any] | None:
    """A fleet's command line as the Makefile writes it, read as argparse would, without argparse.

    ``upgrade [REVISION] --fleet=F [--report=R] [--out-of-order=N] [--phase=P]``, or ``status``,
    ``check`` or ``verify`` with ``--fleet=`` and ``--report=``: a no-op fleet would
    spend 14 ms importing argparse and building the parser, more than its
    thousandth file costs. Anything else (a value after a space, an abbreviated
    or repeated option, an empty value, ``--help``) is None: argparse reads it.
    """
    if not argv or argv[0] not in FLEET_COMMANDS:
        return None
    name, words = argv[0], argv[1:]
    options: dict[str, Any] = {"command": name, "fleet": None, "report": None}
    if name == "upgrade":
        options |= {"revision": "head", "out_of_order": "0", "phase": ""}
        if words and words[0] and not words[0].startswith("-"):
            options["revision"], words = words[0], words[1:]
    flags = {"--fleet": "fleet", "--report": "report"}
    if name == "upgrade":
        flags |= {"--out-of-order": "out_of_order", "--phase": "phase"}
    for word in words:
        flag, equals, value = word.partition("=")
        key = flags.pop(flag, None)  # popped: a repeated option goes to argparse
        if key is None or not equals or not value:
            return None
        options[key] = value
    return options if options["fleet"] else None


def _interrupted(exc: KeyboardInterrupt) -> int:
    """Ctrl-C, raised through every ``with`` block first: each transaction was rolled back."""
    from dbtools.errors import Interrupted

    # An Interrupted says what an autocommit_block() had committed before.
    said = (exc.committed if isinstance(exc, Interrupted) else "") or (
        "the transaction was rolled back, so nothing was changed"
    )
    print(f"FAILED: interrupted; {said}", file=sys.stderr)
    return 130


# The commands a fleet runs on each of its targets (fleet=<file>).
FLEET_COMMANDS = ("upgrade", "status", "check", "verify")
# What a run imports on top of its command: a fleet imports it once, before it forks a run per
# target. The runtime modules migrations/env.py imports, and for check what it compares with.
ENV_ROOMS = ("backup", "checksums", "locking", "options", "outoforder", "rebuilds", "refusals", "resume")
ENV_IMPORTS = ("logging.config", "alembic.command", *(f"dbtools.runtime.{room}" for room in ENV_ROOMS))
COMPARE_IMPORTS = ("alembic.autogenerate", "dbtools.autogenerate.hooks", "models")


def _fleet(name: str, fleet: str | None, report: str | None, options: dict[str, str]) -> int:
    """``make <upgrade|status|check|verify> fleet=<file>``: this command, forked per target.

    Standard library until a target needs a run (``warm``): the fleet's own
    refusals are ``FleetError``s, and a ``CommandError`` here can only come from
    a module that already imported Alembic (a malformed setting, a target's look).
    """
    import importlib
    from pathlib import Path

    from dbtools import settings
    from dbtools.fleet import runner
    from dbtools.fleet.errors import FleetError

    def warm() -> None:
        """What every target's run imports (Alembic's command, env.py's rooms), imported once, here."""
        for module in (
            f"dbtools.commands.{name}",
            *ENV_IMPORTS,
            *(COMPARE_IMPORTS if name == "check" else ()),
        ):
            importlib.import_module(module)

    try:
        settings.check_all()  # as every command: a malformed MIGRATION_* variable runs nothing
        if not fleet:
            raise FleetError("report= goes with fleet=<file>; a single database's run has no report")
        argv = [name]
        if name == "upgrade":
            revision, out_of_order = options["revision"], options["out_of_order"]
            if out_of_order not in ("0", "1"):
                raise FleetError(f"out_of_order={out_of_order!r}: give 1 (or 0); nothing was changed")
            argv += [revision] + ([f"--out-of-order={out_of_order}"] if out_of_order != "0" else [])
            if options["phase"] not in ("", "expand"):
                raise FleetError(
                    f"phase={options['phase']!r}: give phase=expand, or no phase=; nothing was changed"
                )
            argv += [f"--phase={options['phase']}"] if options["phase"] else []
        runner.run(Path(fleet), argv, main, Path(report) if report else None, warm=warm)
    except FleetError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except Exception as exc:
        from alembic.util import CommandError  # only now, after something went wrong

        if not isinstance(exc, CommandError):
            raise
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    status = main()
    # Skip the interpreter's last collection over every object SQLAlchemy and Alembic
    # created: a tenth of a second of each command, and nothing is left to close by
    # then (engines use NullPool, so a connection closes when its block ends).
    gc.freeze()
    sys.exit(status)

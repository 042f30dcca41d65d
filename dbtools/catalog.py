"""Every make target and ``python -m dbtools`` command, with its one-line summary, defined once.

``make help`` prints this list (``python3 -m dbtools.catalog``, no virtualenv
needed), ``python -m dbtools --help`` builds its sub-commands' help from it,
and a test holds the Makefile, this list and the docs to one another. Standard
library only: ``make help`` runs it with whatever ``python3`` is on the machine.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    # What the make target takes, e.g. "rev=<target>, default head"; shown by make help only.
    make_args: str = ""
    # Also a command of python -m dbtools (the make target calls it), or make-only.
    command: bool = True


ENTRIES = (
    Entry("help", "List the targets", command=False),
    Entry("install", "Create .venv/ with the pinned runtime, test and lint tools", command=False),
    Entry(
        "upgrade",
        "Apply pending migrations; creates a missing SQLite database",
        "rev=<target>, default head; phase=expand; out_of_order=1; fleet=<file> [report=<path>]",
    ),
    Entry("downgrade", "Revert migrations, one by default", "rev=<target> for any other, e.g. rev=base"),
    Entry(
        "migration",
        "Autogenerate a migration from the models",
        'msg="what changed" [renames="t.old=new"]',
    ),
    Entry(
        "rebase",
        "Re-point your branch's migrations onto the other branch's, and prove the result",
        "after a conflict in migrations/head.txt; onto=<rev> otherwise",
    ),
    Entry(
        "squash",
        "Replace the oldest migrations with one, proved to build the same; prune them later",
        "upto=<rev> [allow_data_loss=1]; prune=1 once every database passed it",
    ),
    Entry("check", "Fail if the models differ from the migrated database", "fleet=<file> [report=<path>]"),
    Entry(
        "status",
        "Every migration, applied or pending, its checksum, and model drift",
        "fleet=<file> [report=<path>]",
    ),
    Entry(
        "verify",
        "Fail if an applied migration was edited, deleted or never recorded",
        "fleet=<file> [report=<path>]",
    ),
    Entry("repair", "Show how applied migrations differ from their files, then re-record them"),
    Entry("rehearse", "Run the pending migrations for real, time each, roll back", "rev=<target>"),
    Entry("restore", "Replace the SQLite database with a backup, the newest by default", "file=<backup>"),
    Entry("current", "Show the database's revision"),
    Entry("history", "List the migrations, newest first", command=False),
    Entry("sql", "Print the upgrade SQL without connecting", "rev=<target>, default head", command=False),
    Entry("stamp", "Adopt a database made without migrations, if it matches the models"),
    Entry("schema", "Rewrite schema/*.sql, the DDL at head (starts a throwaway PostgreSQL)"),
    Entry("test", "Run the test suite", command=False),
    Entry(
        "lint", "Refuse migrations that lose data or lock a table without saying why", "after ruff and mypy"
    ),
    Entry(
        "bench",
        "Measure costs against their floors",
        "n=rows, default 1000000; repeat=5; tests=0 skips timing make test",
        command=False,
    ),
    Entry(
        "bench-online",
        "Each change under live traffic, plain against online",
        "n=1000000 rows, repeat=3",
        command=False,
    ),
    Entry(
        "bench-expand",
        "Each breaking change as expand and contract under two app versions, against one step",
        "n=1000000 rows",
        command=False,
    ),
    Entry(
        "bench-autogenerate",
        "Time make check and make migration against 2122eca, and a scratch PostgreSQL",
        "repeat=9",
        command=False,
    ),
    Entry(
        "bench-fleet",
        "Time make upgrade fleet= against django-tenants and a shell loop of make upgrade",
        "schemas=300, files=1000, repeat=1",
        command=False,
    ),
    Entry("clean", "Remove .venv/ and caches (never the database)", command=False),
    Entry("pgserver", "Start or stop a throwaway PostgreSQL server (for CI)"),
)
# Commands of python -m dbtools that no make target wraps.
CLI_ONLY = ("pgserver",)


def by_name(name: str) -> Entry:
    return next(entry for entry in ENTRIES if entry.name == name)


def make_help() -> str:
    lines = ["Usage: make <target> [rev=...] [msg=...]   (DATABASE_URL overrides sqlite:///app.db)"]
    targets = [entry for entry in ENTRIES if entry.name not in CLI_ONLY]
    width = max(len(entry.name) for entry in targets)
    for entry in targets:
        args = f" ({entry.make_args})" if entry.make_args else ""
        lines.append(f"  {entry.name:<{width}} {entry.summary}{args}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(make_help() + "\n")

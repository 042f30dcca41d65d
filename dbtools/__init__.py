"""The project's migration tooling around Alembic, in rooms by phase.

- ``runtime/``: what a migration run executes (env.py's helpers: locking,
  refusals, checksums, backups; the no-op fast path; restore, rehearsal,
  status and the schema snapshot, which run migrations or read their records).
- ``autogenerate/``: what ``make migration`` writes (the hooks env.py installs
  into Alembic's autogenerate: comparators, rewriters, renderers).
- ``lint/``: what ``make lint`` reviews in a migration file.
- ``commands/``: one thin module per command of ``python -m dbtools``, named
  after its make target: argument handling and a call into a room.
- ``fleet/``: one command on many databases (``make upgrade fleet=``): the
  fleet file, its targets, each target's run forked, the report.

Below them all, shared: ``paths``, ``settings``, ``target`` (the database,
resolved once), ``errors``, ``run`` (what whoever starts a run decides),
``pgserver`` and ``catalog``. ``tests/test_layout_stays_in_its_rooms.py``
holds the import rules. Standard library only at this level: the fast path
imports through it.
"""

"""The project's migration tooling around Alembic.

Flat modules are shared: what env.py runs in every migration (project, run,
database, locking, guards, integrity, backup, timing, autogen), and what
several commands use (scratch, pgserver, destructive). ``commands/`` holds one
module per command of ``python -m dbtools``, named after its make target.
Nothing here imports from ``commands/`` (but ``__main__``) or from ``tests/``.
"""

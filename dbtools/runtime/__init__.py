"""What a migration run executes: env.py's helpers, the no-op fast path, backups.

Alembic's ``alembic.runtime`` runs migrations; this package is what the
project adds around every run. Standard library only at this level: the fast
path imports through it before SQLAlchemy is loaded.
"""

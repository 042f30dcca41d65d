"""What ``make migration`` writes: the hooks env.py installs into Alembic's autogenerate.

Alembic's ``alembic.autogenerate`` compares the models with a database and
renders the differences; these modules add what it misses (PostgreSQL's facts,
index predicates and expressions, renames, online forms) and render it for
both backends.
"""

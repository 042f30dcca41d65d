"""The naming convention of every constraint and index: plain data, importing nothing.

Deterministic constraint names: SQLite can only alter a constraint that has a
name (batch mode rebuilds the table and must find it again), and identical
names on every backend keep migrations portable. Composite constraints are
named after all their columns (column_0_N_name), so a composite unique on
(user_id, title) and a later unique on user_id get different names; for one
column the names are those of column_0_name.

It lives apart from ``base.py`` so that a migration run reads it without
loading the ORM (``dbtools.runtime.options.load_convention``): Alembic asks
for the convention in every operation, and importing the models costs a
migration run more than the operation itself.
"""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

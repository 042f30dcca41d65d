"""Everything this project registers in Alembic's process-wide autogenerate registries, in one place.

Alembic looks up how to render an operation in ``alembic.autogenerate.renderers``,
and which comparators to run in its registry of plugins. Both are global to
the process: a registration changes every autogenerate run from then on, and
a second one of the same key raises. Made as a side effect of importing the
module that happens to define the function, it is hard to find (who would
look in renames.py for a change to how Alembic renders every primary key?).
So the other modules of this package only define their operations, render
functions and comparators, and importing this module registers them, once.
``dbtools.autogenerate.hooks`` imports it, so whatever installs the hooks
(migrations/env.py, the commands, the benchmark) renders and compares with
them.

Renderers (each returns the lines of the generated migration for its operation):

- ``portable``'s PostgreSQL-only operations (an enum type created, dropped or
  given new values; a key's sequence widened; a comment): Alembic has no
  operation for these, and SQLite nothing to run, so they render as
  ``op.execute()`` under the PostgreSQL guard.
- ``nonblocking.OnlineOp``: a table's changes, each in its online form on
  PostgreSQL, with Alembic's own batch for SQLite in the ``else:`` branch.
- ``nonblocking.RewriteOp``: a table's changes that include a type change
  PostgreSQL makes by rewriting the table, under the expand/contract recipe.
- ``renames.RenameOp``: a rename the user accepted, and the indexes and
  constraints named after the old name renamed with it.
- ``phases.ExpandOp`` and ``phases.ContractOp`` (a column rename), ``phases.ViewOp``
  (a table rename), ``phases.DropLaterOp`` (a dropped column) and ``phases.NotNullOp``
  (NOT NULL on a nullable column): a breaking change
  split into an expand revision and a contract revision, so two application versions overlap.
- ``ops.AlterColumnOp``, *wrapping* Alembic's own renderer, which leaves
  out ``postgresql_using``: ``portable`` sets one on a type change
  PostgreSQL cannot cast by itself, or a marker comment ``make lint``
  refuses where it knows no cast.
- ``ops.CreatePrimaryKeyOp``, *replacing* Alembic's own renderer, which
  raises ``NotImplementedError`` because autogenerate never adds a primary
  key. A renamed table does, for SQLite: its batch recreates the key under
  the new name (``renames``).

Comparator plugin:

- ``PLUGIN``, ``portable``'s comparators: the PostgreSQL facts (enum types,
  key widths, comments) the compared database may not show.
- ``INDEX_PLUGIN``, ``indexes``' comparators: partial-index predicates, and
  SQLite's expression indexes, which Alembic does not compare.

``hooks.COMPARE_OPTIONS`` enables both by these names, which Alembic's log and
errors show.
"""

from __future__ import annotations

import functools

from alembic.autogenerate import renderers
from alembic.operations import ops
from alembic.runtime.plugins import Plugin

from dbtools.autogenerate import indexes, nonblocking, phases, phasesql, portable, renames

PLUGIN = "dbtools.autogenerate.portable"
INDEX_PLUGIN = "dbtools.autogenerate.indexes"

for _op in (portable.EnumTypeOp, portable.EnumValuesOp, portable.SequenceTypeOp, portable.CommentOp):
    renderers.dispatch_for(_op)(portable.render_postgresql_only)
renderers.dispatch_for(nonblocking.OnlineOp)(nonblocking.render_online)
renderers.dispatch_for(nonblocking.RewriteOp)(nonblocking.render_rewrite)
renderers.dispatch_for(renames.RenameOp)(renames.render_rename)
renderers.dispatch_for(phases.ExpandOp)(phasesql.render_expand)
renderers.dispatch_for(phases.ContractOp)(phasesql.render_contract)
renderers.dispatch_for(phases.ViewOp)(phasesql.render_view)
renderers.dispatch_for(phases.DropLaterOp)(phasesql.render_drop_later)
renderers.dispatch_for(phases.NotNullOp)(phasesql.render_not_null)
renderers.dispatch_for(ops.CreatePrimaryKeyOp, replace=True)(renames.render_create_primary_key)
# Alembic's own, wrapped: it renders every ALTER COLUMN, and this one adds what it leaves out.
renderers.dispatch_for(ops.AlterColumnOp, replace=True)(
    functools.partial(portable.render_alter_column, renderers.dispatch(ops.AlterColumnOp))
)

Plugin.setup_plugin_from_module(portable, PLUGIN)
Plugin.setup_plugin_from_module(indexes, INDEX_PLUGIN)

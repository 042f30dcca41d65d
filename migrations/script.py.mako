"""${(message or "").replace("\\", "\\\\").replace('"', '\\"')}

Revision ID: ${up_revision}
Revises:${(' ' + down_revision) if isinstance(down_revision, str) else (' ' + ', '.join(down_revision)) if down_revision else ''}
Create Date: ${create_date}

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
<%
    phase = next((p for p in ("expand", "contract") if f"# Phase: {p}." in (upgrades or "")), None)
%>
% if phase:
# Expand/contract (docs/changing-the-schema.md#breaking-changes-expand-then-contract):
# `make upgrade phase=expand` stops before the first pending "contract" revision.
phase = ${repr(phase)}
% endif

# `make lint` refuses an upgrade() that drops a table, column or constraint, or
# narrows a column's type or nullability, and one whose PostgreSQL SQL takes a
# lock that blocks a busy table (squawk; README "PostgreSQL in production").
# If the hazard is intended, uncomment the line and say why, for the reviewer:
# acknowledge_destructive = "why losing this data is intended"
# acknowledge_locking = {"<squawk rule>": "why this lock is acceptable"}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}

"""Realistic rows that pytest-alembic inserts as it walks the history.

Every present and future migration then upgrades and downgrades with data in
its tables, not just on an empty schema. The rows carry the edge cases of the
users table: the longest allowed username and email, non-ASCII text, mixed
case, and timestamps far from now. Add rows under a new revision when it adds
a table or a column worth filling; rows are inserted again each time a test
upgrades to that revision, so they must not collide with rows that survive
its downgrade.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

LONGEST_EMAIL = "l" * 64 + "@" + ".".join(["d" * 63] * 4)  # 64 + 1 + 255 = 320 characters

USERS_AT_CREATION: list[dict[str, Any]] = [
    {"__tablename__": "users", "username": "ada", "email": "ada@example.com"},
    {
        "__tablename__": "users",
        "username": "Grace.Hopper",
        "email": "Grace.Hopper@Navy.MIL",
        "created_at": datetime(1970, 1, 1, tzinfo=UTC),
    },
    {
        "__tablename__": "users",
        "username": "zoë_ñandú_李",
        "email": "zoë@exämple.org",
        "created_at": datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
    },
    {"__tablename__": "users", "username": "u" * 64, "email": LONGEST_EMAIL},
    {"__tablename__": "users", "username": "o'brien; --", "email": "o'brien+tag@example.co.uk"},
]

REVISION_DATA: dict[str, list[dict[str, Any]]] = {
    "e0f32d6aab59": USERS_AT_CREATION,
}

"""The migration lock's keys, from the standard library: a fleet's look reads them without SQLAlchemy.

``dbtools.runtime.locking`` takes and waits for the lock; this module only says
which key a run on a database's default schema, or on a tenant schema, uses,
so that a fleet (``dbtools.fleet.current``) can see in ``pg_locks`` which
targets a run holds, before it imports anything a run needs.
"""

from __future__ import annotations

import hashlib

# pg_advisory_lock key shared by every migration run on a database's default schema.
# Fixed forever: runs of different versions of this project must exclude each other.
ADVISORY_LOCK_KEY = 7_362_410_518_202_611
# What a tenant schema's key is derived from (lock_key); as fixed as the key above.
SCHEMA_KEY_PREFIX = b"dbtools migration lock\0"


def lock_key(schema: str | None) -> int:
    """The advisory lock key of a run on ``schema`` (None: the database's default schema).

    A tenant schema's is the first 8 bytes of a SHA-256 of its name, as a signed
    bigint: the same in every process and every version, and apart from every
    other schema's (a collision would only make two tenants queue, as before).
    """
    if schema is None:
        return ADVISORY_LOCK_KEY
    digest = hashlib.sha256(SCHEMA_KEY_PREFIX + schema.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)

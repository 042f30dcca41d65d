"""``make upgrade phase=expand``: pending migrations up to, not including, the first pending contract.

A breaking change is generated as two revisions (``dbtools.autogenerate.phases``):
an *expand* one, run before the new application version rolls out, while the
old one still runs, and a *contract* one, run once no old instance is left.
Each file says which it is in a module variable an Alembic user can read
(``phase = "contract"``). A run with ``phase=expand`` applies what is pending
and stops below the first contract revision; plain ``make upgrade`` applies
everything.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError


class Phase(enum.Enum):
    """What ``phase=`` may say; a revision file says ``expand`` or ``contract`` the same way."""

    ALL = ""  # every pending revision
    EXPAND = "expand"
    CONTRACT = "contract"

    @classmethod
    def given(cls, raw: str) -> Phase:
        """``phase=`` as typed: ``expand``, or nothing; anything else is refused in one line."""
        if raw not in ("", cls.EXPAND.value):
            raise CommandError(
                f"phase={raw!r}: give phase=expand (stop before the first pending contract revision), "
                "or no phase= to apply everything; nothing was changed"
            )
        return cls(raw)


def of(script: Script) -> Phase | None:
    """The phase a revision file declares (``phase = "expand"``), or None for an ordinary one."""
    declared = getattr(script.module, "phase", None)
    return Phase(declared) if declared in (Phase.EXPAND.value, Phase.CONTRACT.value) else None


def upgrade_steps(script: ScriptDirectory, destination: str, heads: Sequence[str], phase: Phase) -> list[Any]:
    """Alembic's steps from ``heads`` to ``destination``; for ``phase=expand``, cut before a contract."""
    steps = list(script._upgrade_revs(destination, heads))  # type: ignore[arg-type]  # a tuple, as Alembic passes
    if phase is not Phase.EXPAND:
        return steps
    contract = next((i for i, step in enumerate(steps) if of(step.revision) is Phase.CONTRACT), len(steps))
    return steps[:contract]

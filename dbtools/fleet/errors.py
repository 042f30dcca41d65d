"""A fleet's expected failure, from the standard library: a no-op fleet never imports Alembic to say no.

The fleet's own refusals (a mistake in the fleet file, a report nowhere, a
failed target) are ``FleetError``s; ``dbtools.__main__`` prints each as the
one ``FAILED:`` line, as it prints a command's ``CommandError``. Alembic's
class is not used here because importing it costs as much as the whole of a
fleet whose every target is already at head.
"""

from __future__ import annotations


class FleetError(Exception):
    """Something the user can fix, said in one line: nothing (more) was run."""

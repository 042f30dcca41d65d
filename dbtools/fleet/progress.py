"""What a fleet shows while it runs: a line per finished target on stderr, with the counts.

Done, running, failed and left: enough to see a fleet is moving and what went
wrong, in a log as on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from dbtools.fleet.report import Outcome, Result


@dataclass(frozen=True)
class Counts:
    done: int
    running: int
    failed: int
    left: int

    @classmethod
    def of(cls, outcomes: Sequence[Outcome], running: int) -> Counts:
        done = sum(o.result.succeeded for o in outcomes)
        failed = sum(o.result is Result.FAILED for o in outcomes)
        return cls(done, running, failed, len(outcomes) - done - failed - running)

    def __str__(self) -> str:
        return f"{self.done} done, {self.running} running, {self.failed} failed, {self.left} left"


class Lines:
    """A plain line per finished target."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def finished(self, outcome: Outcome, counts: Counts) -> None:
        what = outcome.result.value + (f": {outcome.reason}" if outcome.reason else "")
        print(
            f"[{counts}] {outcome.target.shown}: {what} ({outcome.seconds or 0:.2f} s)",
            file=self.stream,
            flush=True,
        )

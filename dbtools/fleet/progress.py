"""What a fleet shows while it runs: done, running, failed and left.

On a terminal, a live view drawn by rich: a bar with the counts, and a line
for each target that failed, as it fails. Anywhere else (a CI log, a pipe), a
plain line per finished target, which a log keeps. rich is imported only for a
terminal, and draws only when told (no refresh thread): the fleet forks a run
per target, and a fork must not happen while another thread holds a lock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from dbtools.fleet.report import Outcome, Result

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


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

    def plus_done(self, number: int) -> Counts:
        """These counts after ``number`` more targets succeeded without a run (answered at head)."""
        return Counts(self.done + number, self.running, self.failed, self.left - number)


class Lines:
    """A plain line per finished target."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def changed(self, counts: Counts) -> None:
        """A run started: nothing to say until it ends."""

    def finished(self, outcome: Outcome, counts: Counts) -> None:
        print(self._line(outcome, counts), file=self.stream, flush=True)

    def answered(self, outcomes: Sequence[Outcome], before: Counts) -> None:
        """Targets answered together, at head without a run: a line each, written at once."""
        lines = (self._line(o, before.plus_done(number)) for number, o in enumerate(outcomes, 1))
        self.stream.write("".join(f"{line}\n" for line in lines))
        self.stream.flush()

    @staticmethod
    def _line(outcome: Outcome, counts: Counts) -> str:
        what = outcome.result.value + (f": {outcome.reason}" if outcome.reason else "")
        return f"[{counts}] {outcome.target.shown}: {what} ({outcome.seconds or 0:.2f} s)"


class Live:
    """rich's progress bar with the counts, redrawn at each start and end; each failure printed above it."""

    def __init__(self, stream: TextIO, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress: Progress = Progress(
            TextColumn("fleet"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=Console(file=stream, highlight=False),
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task: TaskID = self.progress.add_task("fleet", total=total, counts=str(Counts(0, 0, 0, total)))

    def __enter__(self) -> Live:
        self.progress.start()
        self.progress.refresh()
        return self

    def __exit__(
        self, _kind: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.progress.refresh()
        self.progress.stop()

    def changed(self, counts: Counts) -> None:
        self.progress.update(self.task, completed=counts.done + counts.failed, counts=str(counts))
        self.progress.refresh()

    def finished(self, outcome: Outcome, counts: Counts) -> None:
        if outcome.result is Result.FAILED:
            from rich.markup import escape

            self.progress.console.print(
                f"[bold red]failed[/] {escape(outcome.target.shown)}: {escape(outcome.reason)}"
            )
        self.changed(counts)

    def answered(self, outcomes: Sequence[Outcome], before: Counts) -> None:
        """Targets answered together, at head without a run: the bar jumps once, not once each."""
        self.changed(before.plus_done(len(outcomes)))


View = Lines | Live


def view(total: int, stream: TextIO | None = None) -> View:
    """The live view on a terminal, plain lines elsewhere."""
    stream = stream or sys.stderr
    return Live(stream, total) if stream.isatty() else Lines(stream)

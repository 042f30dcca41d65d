"""What shows while an expand revision's backfill runs: rows done of about how many, and how fast.

The backfill stays one server-side ``DO`` block (``dbtools.autogenerate.phases``),
each batch its own transaction, so the SQL ``make sql`` prints runs by hand
in psql as it runs here, and a killed run resumes by skipping the rows it
filled. After each batch the block says how far it got, as a notice:

    backfill users: about 1000000 rows
    backfill users: 3000 of about 1000000 rows
    backfill users: done, 1000000 rows

(``about``: ``pg_class.reltuples``, or a count when the table was never
analyzed). psql prints those notices as they come; a run reads them on its
own connection (psycopg's notice handler, called in the run's thread, between
the block's statements) and shows them: on a terminal, rich's bar with the
rate; anywhere else (a CI log, a pipe), a plain line at most once a second,
and the last one always. rich is imported only for a terminal, and draws only
when told (no refresh thread), as the fleet's view does.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# The notices the generated DO block raises (dbtools.autogenerate.phasesql._backfill writes them).
START = re.compile(r"^backfill (\S+): about (\d+) rows$")
BATCH = re.compile(r"^backfill (\S+): (\d+) of about (\d+) rows$")
DONE = re.compile(r"^backfill (\S+): done, (\d+) rows$")
# How often a plain line is written while a backfill runs, in seconds.
EVERY = 1.0


@dataclass
class Lines:
    """A plain line at most every ``EVERY`` seconds while a table is backfilled, and one at its end."""

    stream: TextIO
    started: float = field(default_factory=time.monotonic)
    written: float = 0.0

    def batch(self, table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.written >= EVERY:
            self.written = now
            share = f" ({100 * done // total}%)" if total else ""
            self._print(f"Backfill {table}: {done:,} of about {total:,} rows{share}, {self._rate(done)}")

    def done(self, table: str, rows: int) -> None:
        self._print(
            f"Backfill {table}: {rows:,} rows in {time.monotonic() - self.started:.1f} s, {self._rate(rows)}"
        )

    def close(self) -> None:
        """Nothing drawn to take down."""

    def _rate(self, rows: int) -> str:
        return f"{rows / max(time.monotonic() - self.started, 1e-6):,.0f} rows/s"

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class Live:
    """rich's bar for the table being backfilled: rows done of the estimate, the rate, the time left."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress: Progress = Progress(
            TextColumn("backfill {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(file=stream, highlight=False),
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.started = time.monotonic()

    def batch(self, table: str, done: int, total: int) -> None:
        if table not in self.tasks:
            self.progress.start()
            self.tasks[table] = self.progress.add_task(table, total=total, rate="")
        rate = f"{done / max(time.monotonic() - self.started, 1e-6):,.0f} rows/s"
        self.progress.update(self.tasks[table], completed=done, total=max(total, done), rate=rate)
        self.progress.refresh()

    def done(self, table: str, rows: int) -> None:
        if table in self.tasks:
            self.progress.update(self.tasks[table], completed=rows, total=rows)
            self.progress.refresh()
        self.close()

    def close(self) -> None:
        """The bar left where it stands, the cursor shown again: at the end, or when the run is cut."""
        if self.progress.live.is_started:
            self.progress.stop()


View = Lines | Live


def view(stream: TextIO) -> View:
    """The live bar on a terminal, plain lines elsewhere."""
    return Live(stream) if stream.isatty() else Lines(stream)


@dataclass
class Notices:
    """A psycopg notice handler that shows a backfill's notices; a view each, made as it starts."""

    show: Callable[[], View]
    current: View | None = None

    def __call__(self, diagnostic: Any) -> None:
        message = str(getattr(diagnostic, "message_primary", "") or "")
        batch, done = BATCH.match(message), DONE.match(message)
        if START.match(message):
            self.close()
            self.current = self.show()  # its clock starts before the first batch
        elif batch is not None and self.current is not None:
            self.current.batch(batch[1], int(batch[2]), int(batch[3]))
        elif done is not None and self.current is not None:
            self.current.done(done[1], int(done[2]))
            self.current = None  # the next backfill of the run starts its own clock

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


@contextmanager
def shown(dbapi_connection: Any, stream: TextIO | None = None) -> Iterator[None]:
    """Show the backfill notices ``dbapi_connection`` receives (psycopg 3) until the block ends."""
    add = getattr(dbapi_connection, "add_notice_handler", None)
    if add is None:  # another driver: the backfill runs as before, without progress
        yield
        return
    notices = Notices(lambda: view(stream or sys.stderr))
    add(notices)
    try:
        yield
    finally:
        notices.close()  # a run cut midway (Ctrl-C, a killed backend) leaves no bar half-drawn
        dbapi_connection.remove_notice_handler(notices)

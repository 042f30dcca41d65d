"""Each target's outcome, as the table at the end and as the JSON report (``report=<path>``).

The JSON's shape is the contract a deploy script reads:
``{"targets": [{"target", "group", "from", "to", "seconds", "result", "reason"}]}``,
a row per target in run order, ``target`` masked (``#schema`` for a tenant schema).
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from dbtools.fleet.errors import FleetError
from dbtools.fleet.targets import Target


class Result(StrEnum):
    UPGRADED = "upgraded"  # make upgrade applied at least one migration
    CURRENT = "current"  # at head: nothing to do (upgrade), nothing pending (status)
    PENDING = "pending"  # make status: behind head
    OK = "ok"  # make check found the models and the database alike; make verify, every checksum
    FAILED = "failed"  # the run's FAILED line is the reason
    NOT_STARTED = "not started"  # stopped (on_error = "stop") or interrupted before its turn

    @property
    def succeeded(self) -> bool:
        return self in (Result.UPGRADED, Result.CURRENT, Result.PENDING, Result.OK)


@dataclass
class Outcome:
    target: Target
    result: Result = Result.NOT_STARTED
    before: str | None = None
    after: str | None = None
    seconds: float | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target.shown,
            "group": self.target.group,
            "from": self.before,
            "to": self.after,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "result": self.result.value,
            "reason": self.reason,
        }

    def cells(self) -> tuple[str, ...]:
        """The row of the table, in ``COLUMNS`` order."""
        return (
            self.target.shown,
            self.target.group,
            self.before or "-",
            self.after or "-",
            "-" if self.seconds is None else f"{self.seconds:.2f}",
            self.result.value,
            self.reason,
        )


COLUMNS = ("target", "group", "from", "to", "seconds", "result", "reason")


def table(outcomes: list[Outcome]) -> str:
    """The fleet's outcome as a plain-text table, a row per target (the reason last, unpadded)."""
    rows = [COLUMNS, *(o.cells() for o in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ).rstrip()


RESULT_STYLE = {Result.FAILED: "bold red", Result.NOT_STARTED: "yellow", Result.PENDING: "yellow"}


def show(outcomes: list[Outcome], out: TextIO) -> None:
    """The table at the end: drawn by rich on a terminal, plain text (``table``) anywhere else."""
    if not out.isatty():
        print(table(outcomes), file=out)
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # The group is in the JSON report: on a terminal the width goes to the target and the reason.
    shown = [name for name in COLUMNS if name != "group"]
    drawn = Table(*shown, box=box.SIMPLE_HEAD)
    rows = [dict(zip(COLUMNS, outcome.cells(), strict=True)) for outcome in outcomes]
    for name, column in zip(shown, drawn.columns, strict=True):
        column.overflow = "fold"  # a narrow terminal wraps a target or a reason, never cuts it
        if name not in ("target", "reason"):  # a revision, a time or a result stays on one line
            column.min_width = max(len(cell) for cell in [name, *(row[name] for row in rows)])
    for outcome, row in zip(outcomes, rows, strict=True):
        # Text, never markup: a reason or a file name may hold [brackets].
        cells = {name: Text(row[name]) for name in shown}
        cells["result"].stylize(RESULT_STYLE.get(outcome.result, "green"))
        drawn.add_row(*cells.values())
    Console(file=out, highlight=False).print(drawn)


def write_report(path: Path, outcomes: list[Outcome]) -> None:
    """The JSON report, written whole or not at all."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps({"targets": [o.as_json() for o in outcomes]}, indent=1) + "\n")
        os.replace(partial, path)
    except OSError as exc:
        with suppress(OSError):
            partial.unlink()
        raise FleetError(f"report={path} cannot be written: {exc.strerror}") from None

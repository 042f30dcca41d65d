"""One look at many SQLite files, split across forked processes: each file's look is mostly SQLite's own work.

A fleet at head answers a thousand files in its own process
(``dbtools.fleet.current``), and a file's look (open it, take the write lock,
read two tables, close it) is about 0.15 ms, two thirds of it inside SQLite.
Threads do not help: measured, two of them took longer than one, fighting over
the interpreter between SQLite's calls. Processes do: two halved the look.

A child reports which of its items it found by their index, over a pipe. A
child that fails in any way reports nothing, so its items go to their own
runs, which decide as they always did: a split look may say less, never more.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import TypeVar

Item = TypeVar("Item")
# A look at fewer items than this per process stays in fewer processes: a fork costs
# about as much as looking at a few dozen files.
MIN_PER_PROCESS = 250


def found_across_processes(
    items: Sequence[Item], look: Callable[[Sequence[Item]], set[int]], bound: int
) -> set[int]:
    """The indexes into ``items`` that ``look`` finds, looking in up to ``bound`` processes at once.

    ``look`` gets a slice and returns indexes into that slice. No more processes
    than the cores this process may run on, nor than ``MIN_PER_PROCESS`` allows.
    """
    processes = max(1, min(bound, cores(), len(items) // MIN_PER_PROCESS))
    starts = [len(items) * part // processes for part in range(processes + 1)]
    sys.stdout.flush()  # nothing buffered is written twice: a child ends with os._exit
    sys.stderr.flush()
    children = [_start(items[starts[p] : starts[p + 1]], look) for p in range(1, processes)]
    found = look(items[: starts[1]])
    for part, child in enumerate(children, start=1):
        count = starts[part + 1] - starts[part]
        if child is None:  # no process to be had (a fork refused): looked at here
            indexes: Iterable[int] = look(items[starts[part] : starts[part + 1]])
        else:
            indexes = _result(*child, count)
        found.update(starts[part] + index for index in indexes)
    return found


def cores() -> int:
    """The cores this process may run on (Linux's affinity; elsewhere, the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _start(items: Sequence[Item], look: Callable[[Sequence[Item]], set[int]]) -> tuple[int, int] | None:
    """A child looking at ``items``: its pid and the pipe it answers on; None if none could start."""
    try:
        reading, writing = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(reading)
        os.close(writing)
        return None
    if pid == 0:  # the child: look, write the indexes, and leave without running anything else
        status = 1
        try:
            os.close(reading)
            with os.fdopen(writing, "w") as pipe:
                json.dump(sorted(look(items)), pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(writing)
    return pid, reading


def _result(pid: int, reading: int, count: int) -> list[int]:
    """The child's indexes, if it ended well and they are indexes of its slice; else none."""
    with os.fdopen(reading) as pipe:
        said = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return []
    with suppress(ValueError):
        indexes = json.loads(said)
        if isinstance(indexes, list) and all(type(i) is int and 0 <= i < count for i in indexes):
            return indexes
    return []

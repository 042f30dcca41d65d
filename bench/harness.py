"""Measuring one step: in a forked child, for its wall time and its own peak memory.

Forking after the imports keeps start-up out of the numbers that are about a
migration, and gives each step a process whose peak RSS is its own (read with
``wait4``). Measurements are repeated and alternated between the two sides of a
comparison, so a noisy neighbour slows both alike; the median is reported.
"""

from __future__ import annotations

import os
import pickle
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a benchmark's copy of the project leaves out: the virtualenv, git, databases, backups, caches.
COPY_IGNORE = (".venv", ".git", "*.db*", "backups", "__pycache__", ".*_cache", ".dbtools")


def copy_project(target: Path, *also_ignore: str) -> None:
    """This checkout, copied to ``target`` for a benchmark to change and migrate."""
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*COPY_IGNORE, *also_ignore))


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float
    note: str = ""


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def peak_rss_mb(self) -> float:
        return max(s.peak_rss_mb for s in self.samples)

    @property
    def notes(self) -> set[str]:
        return {s.note for s in self.samples if s.note}


def in_child(step: Callable[[], str | None]) -> Sample:
    """Run ``step`` in a forked process; time it there, and read its peak RSS."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 1
        try:
            start = time.perf_counter()
            note = step() or ""
            elapsed = time.perf_counter() - start
            os.write(write, pickle.dumps((elapsed, note)))
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        raise RuntimeError("a measured step failed; see its traceback above")
    elapsed, note = pickle.loads(data)  # noqa: S301 - our own child's bytes
    return Sample(elapsed, usage.ru_maxrss / 1024, note)


def compare(
    repeat: int,
    sides: dict[str, tuple[Callable[[], None], Callable[[], str | None]]],
) -> dict[str, Series]:
    """For each round, for each side: prepare (untimed, in this process), then measure."""
    results = {name: Series() for name in sides}
    for _ in range(repeat):
        for name, (prepare, step) in sides.items():
            prepare()
            results[name].samples.append(in_child(step))
    return results


def timed_command(argv: list[str], cwd: Path, env: dict[str, str]) -> Callable[[], str | None]:
    """A whole CLI run as a step: what a deploy pays, start-up included."""

    def step() -> None:
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)

    return step


def machine() -> dict[str, str]:
    import sqlite3

    import alembic
    import sqlalchemy

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "SQLAlchemy": sqlalchemy.__version__,
        "Alembic": alembic.__version__,
    }

"""Migration runs in forked processes, for the race and crash tests.

Each CLI process spends most of its half second importing SQLAlchemy and
Alembic. Forking after those imports makes a run cost tens of milliseconds,
so the tests can afford many rounds; each still executes env.py and the
migrations from scratch, as `alembic upgrade` does. A few rounds in each test
use the real CLI as well.

The test process imports, once, the modules every run would import anyway
(``dbtools``, the ORM, both drivers): a forked run that imports them itself
costs four times as much CPU, and setup steps fork hundreds of runs.
"""

from __future__ import annotations

import gc
import importlib
import io
import multiprocessing
import os
import pkgutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

import dbtools
from dbtools import paths
from tests.helpers import url_string

FORK = multiprocessing.get_context("fork")


def _preload() -> None:
    """Import what env.py and the commands import; ``models`` stays out, as each copy has its own."""
    for module in pkgutil.walk_packages(dbtools.__path__, "dbtools."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
    for name in ("logging.config", "sqlalchemy.orm", "sqlite3", "psycopg", "alembic.autogenerate"):
        importlib.import_module(name)


_preload()


def _run(ini: str, url: str, action: str, target: str, barrier: Barrier | None) -> None:
    os.environ["DATABASE_URL"] = url
    code = 1
    try:
        if barrier is not None:
            barrier.wait(timeout=30)
        getattr(command, action)(Config(ini), target)
        code = 0
    except BaseException:
        traceback.print_exc()  # os._exit below would swallow it
    finally:
        os._exit(code)  # skip the parent's atexit handlers and finalizers


def start(ini: str, url: URL, action: str = "upgrade", target: str = "head", barrier: Any = None) -> Any:
    process = FORK.Process(target=_run, args=(ini, url_string(url), action, target, barrier))
    process.start()
    return process


def run_together(ini: str, url: URL, count: int, action: str = "upgrade", target: str = "head") -> list[int]:
    """Start ``count`` runs at the same instant; return their exit codes."""
    barrier = FORK.Barrier(count)
    processes = [start(ini, url, action, target, barrier) for _ in range(count)]
    for process in processes:
        process.join(timeout=120)
    return [process.exitcode for process in processes]


def _enter(root: str) -> None:
    """Make this forked process see the project at ``root`` as a CLI process started there would.

    The test process imported ``dbtools`` from the checkout the tests run in;
    a copy's ``dbtools`` is the same code, but the paths it computed at import
    (``paths.ROOT`` and the names bound from it) point at the checkout. Each
    module's project path is moved onto the copy, and the copy's ``models`` are
    imported afresh. The objects inherited from the test process are frozen
    out of the garbage collector: collecting the test's engines here would
    close connections the test still uses.
    """
    gc.freeze()
    os.chdir(root)
    sys.path.insert(0, root)
    for name in [name for name in sys.modules if name == "models" or name.startswith("models.")]:
        del sys.modules[name]  # this process may have imported another copy's models
    old, new = paths.ROOT, Path(root).resolve()
    if old != new:
        for name, module in list(sys.modules.items()):
            if name == "dbtools" or name.startswith("dbtools."):
                for attr, value in list(vars(module).items()):
                    if isinstance(value, Path) and value.is_relative_to(old):
                        setattr(module, attr, new / value.relative_to(old))


def _call_in(root: str, url: str, env: dict[str, str], work: Callable[[Config], object]) -> None:
    """Run ``work`` on the project at ``root`` as a fresh CLI process would see it."""
    os.environ.update(env, DATABASE_URL=url)
    _enter(root)
    code = 1
    try:
        work(Config(os.path.join(root, "alembic.ini")))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def call(root: str, url: URL, work: Callable[[Config], object], **env: str) -> int:
    """Run one command function (``dbtools.commands.*``) in a forked process; its exit code.

    The same function ``make`` would call, without the half second of imports.
    """
    process = FORK.Process(target=_call_in, args=(root, url_string(url), env, work))
    process.start()
    process.join(timeout=120)
    return int(process.exitcode if process.exitcode is not None else -1)


def _cli_in(
    program: str,
    root: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    out: int,
    err: int,
) -> None:
    """``python -m <program> *argv`` in the project at ``root``, in this forked process."""
    code = 1
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        os.environ.clear()
        os.environ.update(env)
        _enter(root)
        sys.argv = [program, *argv]
        if program == "alembic":
            from alembic.config import main as alembic

            alembic(list(argv), prog="alembic")
            code = 0
        else:
            from dbtools.__main__ import main

            code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def cli(
    root: Path,
    argv: Sequence[str],
    env: Mapping[str, str],
    program: str = "dbtools",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """What ``python -m <program> *argv`` (dbtools or alembic) run in ``root`` with ``env`` gives, forked.

    The same ``main`` with the same arguments, environment, working folder
    and output streams, without the half second of imports: for tests whose
    point is what a command does. What the Makefile and a new process add
    (argument quoting, the fast path's import-free start, signals, dropped
    privileges) is tested through the real ``make`` and ``alembic``: in
    test_make_targets.py, test_noop_upgrade_fast_path.py and the tests that
    send signals or run as a plain user.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        process = FORK.Process(
            target=_cli_in, args=(program, str(root), list(argv), dict(env), out.fileno(), err.fileno())
        )
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(["python", "-m", program, *argv], timeout)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            ["python", "-m", program, *argv],
            process.exitcode,
            out.read().decode("utf-8", "backslashreplace"),
            err.read().decode("utf-8", "backslashreplace"),
        )

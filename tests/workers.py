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

import importlib
import multiprocessing
import os
import pkgutil
import sys
import traceback
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

import dbtools
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


def _call_in(root: str, url: str, env: dict[str, str], work: Callable[[Config], object]) -> None:
    """Run ``work`` on the project at ``root`` as a fresh CLI process would see it."""
    os.environ.update(env, DATABASE_URL=url)
    os.chdir(root)
    sys.path.insert(0, root)
    for name in [name for name in sys.modules if name == "models" or name.startswith("models.")]:
        del sys.modules[name]  # this process may have imported another copy's models
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

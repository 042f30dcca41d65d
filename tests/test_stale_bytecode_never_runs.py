"""A model or migration file edited within the second Python cached it runs as edited, not as cached.

Python trusts a ``.pyc`` whose recorded source size and modification second
match the source's. A file rewritten in that same second, keeping its size,
would run as it was: here the model's ``String(64)`` becomes ``String(65)``
(one character for another) in the second its bytecode was written, and
``make check`` must see it. The times are set outright, so the test does not
depend on where a second boundary falls. The whole suite also runs with
bytecode written (tests/conftest.py), as on a machine without
PYTHONDONTWRITEBYTECODE: ten tests that rewrite a migration or a model right
after a run failed that way before dbtools.runtime.bytecode.
"""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from importlib.util import cache_from_source
from pathlib import Path

from sqlalchemy.engine import URL

from tests.helpers import Project, base_env

SECOND = 1_000_000_000


def _at(path: Path, second: int, nanoseconds: int) -> None:
    os.utime(path, ns=(second * SECOND + nanoseconds, second * SECOND + nanoseconds))


def test_a_model_edited_in_the_second_its_bytecode_was_written_is_seen_as_edited(
    project_copy: Project, tmp_path: Path
) -> None:
    url = URL.create("sqlite", database=str(tmp_path / "app.db"))
    env = {key: value for key, value in base_env(url).items() if key != "PYTHONDONTWRITEBYTECODE"}
    upgraded = project_copy.make("upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr

    model = project_copy.root / "models" / "user.py"
    cached = Path(cache_from_source(str(model)))
    second = int(model.stat().st_mtime)
    _at(model, second, 100_000_000)
    py_compile.compile(str(model), cfile=str(cached), doraise=True)  # as an import would write it
    _at(cached, second, 200_000_000)  # written in the source's second
    model.write_text(model.read_text().replace("String(64)", "String(65)", 1))  # the same size
    _at(model, second, 300_000_000)  # and changed again in that second

    checked = subprocess.run(
        [sys.executable, "-m", "dbtools", "check"],
        cwd=project_copy.root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode != 0, "make check ran the model as it was cached"
    assert "users.username" in checked.stdout + checked.stderr

"""``python -m dbtools pgserver start|stop DIR``: the throwaway server ``.ci/run`` shares with every test."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.util import CommandError

from dbtools import pgserver as server


def pgserver(config: Config, action: str, directory: str) -> None:
    base = Path(directory).resolve()
    try:
        if action == "start":
            # The admin URL, password included, for the caller to keep in its environment.
            print(server.start(base).render_as_string(hide_password=False))
        else:
            server.stop(base)
    except (server.NoServer, RuntimeError) as exc:
        raise CommandError(f"could not {action} the PostgreSQL server in {base}: {exc}") from None

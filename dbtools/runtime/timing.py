"""How long each migration of a run took: logged, and kept for `make rehearse`."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo

log = logging.getLogger(__name__)


class StepTimer:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []  # (revision, seconds)
        self._mark = time.perf_counter()

    def start(self) -> None:
        self._mark = time.perf_counter()

    def on_version_apply(
        self, ctx: MigrationContext, step: MigrationInfo, heads: Collection[str], run_args: Mapping[str, Any]
    ) -> None:
        now = time.perf_counter()
        elapsed, self._mark = now - self._mark, now
        # Up or down, the migration that ran is the "up" side of the step.
        revision = ",".join(step.up_revision_ids)
        self.steps.append((revision, elapsed))
        log.info("%s %s took %.3f s", "Upgrade to" if step.is_upgrade else "Downgrade of", revision, elapsed)

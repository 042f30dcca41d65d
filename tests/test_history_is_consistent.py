"""pytest-alembic's own checks of the migration history, on both backends.

- single head, so `make upgrade` is never ambiguous;
- every migration upgrades from base to head;
- the models match the DDL the migrations produce (what `make check` guards);
- every step downgrades and upgrades again;
- a downgrade leaves no trace of its upgrade (experimental).
"""

from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from pytest_alembic.tests.experimental import (
    test_all_models_register_on_metadata,
    test_downgrade_leaves_no_trace,
)

__all__ = [
    "test_all_models_register_on_metadata",
    "test_downgrade_leaves_no_trace",
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]

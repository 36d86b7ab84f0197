"""The experiment store: every piece of experiment state, in SQLite (default) or PostgreSQL.

Open it with `open_store(url)`, which also migrates it, then work in `store.session()` blocks
with the repository functions.
"""

from trainyard.store.engine import (
    Store,
    default_database_url,
    default_home,
    make_engine,
    make_session_factory,
    open_store,
)
from trainyard.store.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head,
)
from trainyard.store.models import (
    Base,
    Checkpoint,
    CheckpointState,
    Experiment,
    ExperimentState,
    Metric,
    MetricKind,
    Trial,
    TrialState,
    utcnow,
)
from trainyard.store.repository import (
    add_checkpoint,
    add_metrics,
    create_experiment,
    create_trial,
    get_experiment,
    get_trial,
    latest_metrics,
    list_checkpoints,
    list_experiments,
    list_metrics,
    list_trials,
    mark_checkpoint_deleted,
    record_heartbeat,
    set_experiment_state,
    stale_running_trials,
    update_trial,
)

__all__ = [
    "Base",
    "Checkpoint",
    "CheckpointState",
    "Experiment",
    "ExperimentState",
    "Metric",
    "MetricKind",
    "Store",
    "Trial",
    "TrialState",
    "add_checkpoint",
    "add_metrics",
    "alembic_config",
    "create_experiment",
    "create_trial",
    "current_revision",
    "default_database_url",
    "default_home",
    "get_experiment",
    "get_trial",
    "head_revision",
    "latest_metrics",
    "list_checkpoints",
    "list_experiments",
    "list_metrics",
    "list_trials",
    "make_engine",
    "make_session_factory",
    "mark_checkpoint_deleted",
    "open_store",
    "record_heartbeat",
    "set_experiment_state",
    "stale_running_trials",
    "update_trial",
    "upgrade_to_head",
    "utcnow",
]

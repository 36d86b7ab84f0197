"""The same schema and round trips on PostgreSQL, when a test server is named.

Set TRAINYARD_TEST_POSTGRES_URL (e.g. postgresql+psycopg://user@/db?host=/tmp) to a
throwaway database: the test drops every store table in it, before and after.
"""

import math
import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from trainyard.store import (
    Base,
    Store,
    add_metrics,
    alembic_config,
    create_experiment,
    create_trial,
    current_revision,
    get_experiment,
    list_metrics,
    open_store,
    set_experiment_state,
    stale_running_trials,
    update_trial,
    upgrade_to_head,
    utcnow,
)

URL = os.environ.get("TRAINYARD_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(URL is None, reason="TRAINYARD_TEST_POSTGRES_URL is not set")


def drop_store_tables(store: Store) -> None:
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")


@pytest.fixture
def pg_store() -> Iterator[Store]:
    assert URL is not None
    store = open_store(URL)
    drop_store_tables(store)  # leftovers of an interrupted run
    upgrade_to_head(store.engine)
    yield store
    drop_store_tables(store)
    store.close()


def test_postgres_schema_matches_the_models(pg_store: Store) -> None:
    assert current_revision(pg_store.engine) == "0001"
    with pg_store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_postgres_round_trip(pg_store: Store) -> None:
    long_ago = utcnow() - timedelta(hours=1)
    with pg_store.session() as session:
        experiment = create_experiment(session, name="pg", config={"a": 1}, home_dir="/r")
        trial = create_trial(session, experiment_id=experiment.id, hyperparameters={})
        update_trial(
            session,
            trial_id=trial.id,
            state="RUNNING",
            started_at=long_ago,
            last_heartbeat_at=None,
        )
        add_metrics(
            session,
            trial_id=trial.id,
            kind="training",
            batches=1,
            epoch=0.1,
            values={"loss": math.nan, "acc": 0.5},
        )
        set_experiment_state(session, experiment_id=experiment.id, state="ERRORED")
    with pg_store.session() as session:
        loaded = get_experiment(session, "pg")
        assert loaded.ended_at is not None
        assert loaded.ended_at.tzinfo is not None
        stale = stale_running_trials(session, older_than=utcnow() - timedelta(minutes=1))
        assert [t.id for t in stale] == [trial.id]
        (metric,) = list_metrics(session, trial_id=trial.id)
        assert math.isnan(metric.values["loss"])
        assert metric.values["acc"] == 0.5

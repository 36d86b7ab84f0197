"""Worker credentials and the checkpoint inventory in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from trainyard.errors import NotFoundError
from trainyard.protocol import CheckpointEntry
from trainyard.store import (
    CheckpointState,
    Store,
    Trial,
    add_checkpoint,
    create_experiment,
    create_trial,
    find_worker_credential,
    get_trial,
    issue_worker_credential,
    list_checkpoints,
    replace_checkpoints,
    revoke_worker_credentials,
)


@pytest.fixture
def trial(store: Store) -> Trial:
    with store.session() as session:
        experiment = create_experiment(session, name="jets", config={}, home_dir="/runs/jets")
        return create_trial(session, experiment_id=experiment.id, hyperparameters={})


def test_each_attempt_gets_the_next_number_and_revokes_the_last(
    store: Store, trial: Trial
) -> None:
    with store.session() as session:
        assert issue_worker_credential(session, trial_id=trial.id, token_sha256="a" * 64) == 1
        assert issue_worker_credential(session, trial_id=trial.id, token_sha256="b" * 64) == 2
    with store.session() as session:
        first = find_worker_credential(session, token_sha256="a" * 64)
        second = find_worker_credential(session, token_sha256="b" * 64)
        assert first is not None and first.revoked_at is not None
        assert second is not None and second.revoked_at is None and second.attempt == 2
        assert find_worker_credential(session, token_sha256="c" * 64) is None
        revoke_worker_credentials(session, trial_id=trial.id)
    with store.session() as session:
        second = find_worker_credential(session, token_sha256="b" * 64)
        assert second is not None and second.revoked_at is not None


def test_a_token_hash_is_unique(store: Store, trial: Trial) -> None:
    with store.session() as session:
        issue_worker_credential(session, trial_id=trial.id, token_sha256="a" * 64)
    with pytest.raises(IntegrityError), store.session() as session:
        other = create_trial(session, experiment_id=trial.experiment_id, hyperparameters={})
        issue_worker_credential(session, trial_id=other.id, token_sha256="a" * 64)


def test_credentials_of_an_unknown_trial_are_refused(store: Store) -> None:
    with pytest.raises(NotFoundError), store.session() as session:
        issue_worker_credential(session, trial_id=12345, token_sha256="a" * 64)


@pytest.mark.parametrize("trial_id", [2**31, 2**64])
def test_ids_beyond_the_store_range_are_not_found(store: Store, trial_id: int) -> None:
    with pytest.raises(NotFoundError), store.session() as session:
        get_trial(session, trial_id)


def test_the_inventory_becomes_the_active_checkpoints(store: Store, trial: Trial) -> None:
    with store.session() as session:
        for batches in (10, 20):
            add_checkpoint(
                session, trial_id=trial.id, batches=batches, path=f"/c/{batches}", info={}
            )
        replace_checkpoints(
            session,
            trial_id=trial.id,
            present=[
                CheckpointEntry(batches=20, path="/c/20", epoch=2.0),
                CheckpointEntry(batches=30, path="/c/30", epoch=3.0),
            ],
        )
    with store.session() as session:
        active = list_checkpoints(session, trial_id=trial.id)
        everything = list_checkpoints(session, trial_id=trial.id, include_deleted=True)
        assert [c.path for c in active] == ["/c/30", "/c/20"]
        assert active[0].info == {"epoch": 3.0}
        gone = [c for c in everything if c.path == "/c/10"]
        assert [c.state for c in gone] == [CheckpointState.DELETED]

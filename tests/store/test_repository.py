"""Every repository function, on a real SQLite file and a real PostgreSQL database."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from trainyard.errors import NotFoundError
from trainyard.store import (
    CheckpointState,
    Experiment,
    ExperimentState,
    Store,
    Trial,
    TrialState,
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
    utcnow,
)

CONFIG = {"model": "particlenet-lite", "searcher": {"name": "random", "max_trials": 4}}


@pytest.fixture
def experiment(store: Store) -> Experiment:
    with store.session() as session:
        return create_experiment(session, name="jets", config=CONFIG, home_dir="/runs/jets")


@pytest.fixture
def trial(store: Store, experiment: Experiment) -> Trial:
    with store.session() as session:
        return create_trial(session, experiment_id=experiment.id, hyperparameters={"lr": 1e-3})


def test_state_helpers() -> None:
    assert [s for s in ExperimentState if s.is_finished()] == ["COMPLETED", "ERRORED", "CANCELED"]
    assert [s for s in TrialState if s.is_finished()] == [
        "COMPLETED",
        "PAUSED",
        "STOPPED",
        "ERRORED",
        "CANCELED",
    ]


def test_create_experiment_starts_queued(store: Store, experiment: Experiment) -> None:
    with store.session() as session:
        loaded = get_experiment(session, experiment.id)
        assert loaded.name == "jets"
        assert loaded.state is ExperimentState.QUEUED
        assert loaded.config == CONFIG
        assert loaded.home_dir == "/runs/jets"
        assert loaded.created_at == loaded.updated_at
        assert loaded.ended_at is None
        assert loaded.message is None


def test_get_experiment_by_id_digit_string_or_newest_name(store: Store) -> None:
    with store.session() as session:
        first = create_experiment(session, name="rerun", config={}, home_dir="/runs/a")
        second = create_experiment(session, name="rerun", config={}, home_dir="/runs/b")
        create_experiment(session, name="other", config={}, home_dir="/runs/c")
    with store.session() as session:
        assert get_experiment(session, first.id).id == first.id
        assert get_experiment(session, str(first.id)).id == first.id
        assert get_experiment(session, "rerun").id == second.id


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (42, "no experiment with id 42; run `trainyard list`"),
        ("42", "no experiment with id 42; run `trainyard list`"),
        ("missing", "no experiment named 'missing'; run `trainyard list`"),
    ],
)
def test_get_experiment_not_found(store: Store, ref: int | str, message: str) -> None:
    with store.session() as session, pytest.raises(NotFoundError, match=message):
        get_experiment(session, ref)


def test_list_experiments_newest_first_with_limit(store: Store) -> None:
    with store.session() as session:
        for name in ("a", "b", "c"):
            create_experiment(session, name=name, config={}, home_dir=f"/runs/{name}")
    with store.session() as session:
        assert [e.name for e in list_experiments(session)] == ["c", "b", "a"]
        assert [e.name for e in list_experiments(session, limit=2)] == ["c", "b"]


def test_set_experiment_state_sets_and_clears_the_end(
    store: Store, experiment: Experiment
) -> None:
    with store.session() as session:
        running = set_experiment_state(
            session, experiment_id=experiment.id, state=ExperimentState.RUNNING
        )
        assert running.ended_at is None
        assert running.updated_at > experiment.updated_at
    with store.session() as session:
        errored = set_experiment_state(
            session, experiment_id=experiment.id, state="ERRORED", message="trial 3 failed"
        )
    assert errored.state is ExperimentState.ERRORED
    assert errored.ended_at is not None
    assert errored.message == "trial 3 failed"
    with store.session() as session:
        resumed = set_experiment_state(session, experiment_id=experiment.id, state="RUNNING")
        assert (resumed.ended_at, resumed.message) == (None, None)
    with store.session() as session, pytest.raises(ValueError, match="DONE"):
        set_experiment_state(session, experiment_id=experiment.id, state="DONE")
    with store.session() as session, pytest.raises(NotFoundError, match="id 999"):
        set_experiment_state(session, experiment_id=999, state="RUNNING")


def test_create_trial_numbers_within_the_experiment(store: Store, experiment: Experiment) -> None:
    with store.session() as session:
        other = create_experiment(session, name="other", config={}, home_dir="/runs/o")
        trials = [
            create_trial(session, experiment_id=experiment.id, hyperparameters={"lr": lr})
            for lr in (0.1, 0.01)
        ]
        other_trial = create_trial(session, experiment_id=other.id, hyperparameters={})
    assert [t.number for t in trials] == [0, 1]
    assert other_trial.number == 0
    assert len({t.id for t in [*trials, other_trial]}) == 3
    first = trials[0]
    assert first.state is TrialState.QUEUED
    assert first.hyperparameters == {"lr": 0.1}
    assert (first.batches_trained, first.num_restarts) == (0, 0)
    assert first.started_at is first.ended_at is first.last_heartbeat_at is None
    with store.session() as session, pytest.raises(NotFoundError, match="id 999"):
        create_trial(session, experiment_id=999, hyperparameters={})


def test_trial_numbers_are_unique_per_experiment(store: Store, trial: Trial) -> None:
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(
            Trial(experiment_id=trial.experiment_id, number=trial.number, hyperparameters={})
        )


def test_get_and_list_trials(store: Store, experiment: Experiment) -> None:
    with store.session() as session:
        created = [
            create_trial(session, experiment_id=experiment.id, hyperparameters={"i": i})
            for i in range(3)
        ]
    with store.session() as session:
        assert get_trial(session, created[1].id).hyperparameters == {"i": 1}
        listed = list_trials(session, experiment_id=experiment.id)
        assert [t.number for t in listed] == [0, 1, 2]
        with pytest.raises(NotFoundError, match="no trial with id 999"):
            get_trial(session, 999)


def test_update_trial_keeps_timestamps_consistent(store: Store, trial: Trial) -> None:
    with store.session() as session:
        running = update_trial(session, trial_id=trial.id, state="RUNNING", worker_key=4242)
        assert running.state is TrialState.RUNNING
        assert running.worker_key == 4242
        assert running.started_at is not None
        assert running.last_heartbeat_at == running.started_at
        first_start = running.started_at
    with store.session() as session:
        stopped = update_trial(
            session, trial_id=trial.id, state=TrialState.STOPPED, batches_trained=500
        )
        assert stopped.ended_at is not None
        assert stopped.batches_trained == 500
    with store.session() as session:
        resumed = update_trial(session, trial_id=trial.id, state="RUNNING", num_restarts=1)
    assert resumed.started_at == first_start
    assert resumed.last_heartbeat_at is not None
    assert resumed.last_heartbeat_at > first_start
    assert resumed.ended_at is None
    with store.session() as session:
        errored = update_trial(
            session, trial_id=trial.id, state="ERRORED", error="CUDA OOM\n...log tail..."
        )
    assert errored.ended_at is not None
    assert errored.error == "CUDA OOM\n...log tail..."


def test_update_trial_explicit_timestamps_win(store: Store, trial: Trial) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    with store.session() as session:
        updated = update_trial(
            session, trial_id=trial.id, state="COMPLETED", started_at=when, ended_at=when
        )
    assert (updated.started_at, updated.ended_at) == (when, when)


def test_update_trial_rejects_unknown_and_fixed_fields(store: Store, trial: Trial) -> None:
    with store.session() as session:
        with pytest.raises(ValueError, match=r"cannot update trial field\(s\) bogus, number;"):
            update_trial(session, trial_id=trial.id, number=7, bogus=1)
        with pytest.raises(ValueError, match="SLEEPING"):
            update_trial(session, trial_id=trial.id, state="SLEEPING")
        with pytest.raises(NotFoundError, match="no trial with id 999"):
            update_trial(session, trial_id=999, log_path="/tmp/x.log")


def test_record_heartbeat(store: Store, trial: Trial) -> None:
    before = utcnow()
    with store.session() as session:
        record_heartbeat(session, trial_id=trial.id)
    with store.session() as session:
        beat = get_trial(session, trial.id).last_heartbeat_at
        assert beat is not None
        assert beat >= before
        with pytest.raises(NotFoundError, match="no trial with id 999"):
            record_heartbeat(session, trial_id=999)


def test_stale_running_trials(store: Store, experiment: Experiment) -> None:
    now = utcnow()
    long_ago = now - timedelta(minutes=10)
    with store.session() as session:
        trials = [
            create_trial(session, experiment_id=experiment.id, hyperparameters={})
            for _ in range(5)
        ]
        ids = [t.id for t in trials]
        # 0: silent since it started; 1: beat recently; 2: old start but recent beat;
        # 3: finished long ago; 4: still queued.
        update_trial(session, trial_id=ids[0], state="RUNNING", last_heartbeat_at=None)
        update_trial(session, trial_id=ids[0], started_at=long_ago)
        update_trial(session, trial_id=ids[1], state="RUNNING")
        update_trial(session, trial_id=ids[2], state="RUNNING", started_at=long_ago)
        update_trial(session, trial_id=ids[3], state="COMPLETED", started_at=long_ago)
    with store.session() as session:
        stale = stale_running_trials(session, older_than=now - timedelta(minutes=1))
        assert [t.id for t in stale] == [ids[0]]
        # Heartbeats older than the cutoff make a trial stale even with a recent start.
        update_trial(session, trial_id=ids[1], last_heartbeat_at=long_ago)
        stale = stale_running_trials(session, older_than=now - timedelta(minutes=1))
        assert [t.id for t in stale] == [ids[0], ids[1]]


def test_metrics(store: Store, trial: Trial) -> None:
    with store.session() as session:
        add_metrics(
            session,
            trial_id=trial.id,
            kind="training",
            batches=200,
            epoch=0.2,
            values={"loss": 0.5},
        )
        add_metrics(
            session,
            trial_id=trial.id,
            kind="training",
            batches=100,
            epoch=0.1,
            values={"loss": 0.9, "acc": 1},
        )
        validation = add_metrics(
            session,
            trial_id=trial.id,
            kind="validation",
            batches=100,
            epoch=0.1,
            values={"auc": 0.8},
        )
    assert validation.reported_at.tzinfo is UTC
    with store.session() as session:
        every = list_metrics(session, trial_id=trial.id)
        assert [(m.kind, m.batches) for m in every] == [
            ("training", 100),
            ("validation", 100),
            ("training", 200),
        ]
        training = list_metrics(session, trial_id=trial.id, kind="training")
        assert [m.values for m in training] == [{"loss": 0.9, "acc": 1.0}, {"loss": 0.5}]
        assert isinstance(training[0].values["acc"], float)
        latest = latest_metrics(session, trial_id=trial.id, kind="training")
        assert latest is not None
        assert (latest.batches, latest.epoch) == (200, 0.2)
        assert latest_metrics(session, trial_id=trial.id, kind="validation") is not None
        assert list_metrics(session, trial_id=999) == []
        assert latest_metrics(session, trial_id=999, kind="training") is None


def test_non_finite_metric_values_round_trip(store: Store, trial: Trial) -> None:
    """Stored as strings, because PostgreSQL's JSON has no NaN or infinity."""
    values = {"loss": math.nan, "grad_norm": math.inf, "log_lr": -math.inf, "acc": 0.5}
    with store.session() as session:
        add_metrics(
            session, trial_id=trial.id, kind="training", batches=1, epoch=0.0, values=values
        )
    with store.engine.connect() as connection:
        # As text: PostgreSQL's driver would already parse JSON, and must not meet a NaN there.
        raw = connection.exec_driver_sql(
            'SELECT CAST("values" AS TEXT) FROM ty_metrics'
        ).scalar_one()
    assert json.loads(raw) == {"loss": "nan", "grad_norm": "inf", "log_lr": "-inf", "acc": 0.5}
    with store.session() as session:
        (metric,) = list_metrics(session, trial_id=trial.id)
    assert math.isnan(metric.values.pop("loss"))
    assert metric.values == {"grad_norm": math.inf, "log_lr": -math.inf, "acc": 0.5}


def test_metrics_reject_bad_kind_and_unknown_trial(store: Store, trial: Trial) -> None:
    with store.session() as session:
        with pytest.raises(ValueError, match="'training' or 'validation', not 'test'"):
            add_metrics(session, trial_id=trial.id, kind="test", batches=1, epoch=0.0, values={})
        with pytest.raises(ValueError, match="not 'test'"):
            list_metrics(session, trial_id=trial.id, kind="test")
        with pytest.raises(NotFoundError, match="no trial with id 999"):
            add_metrics(session, trial_id=999, kind="training", batches=1, epoch=0.0, values={})


def test_checkpoints(store: Store, trial: Trial) -> None:
    with store.session() as session:
        old = add_checkpoint(
            session,
            trial_id=trial.id,
            batches=100,
            path="/ck/100.pt",
            info={"framework": "torch", "epoch": 1},
        )
        new = add_checkpoint(session, trial_id=trial.id, batches=200, path="/ck/200.pt", info={})
    assert old.state is CheckpointState.ACTIVE
    with store.session() as session:
        listed = list_checkpoints(session, trial_id=trial.id)
        assert [c.id for c in listed] == [new.id, old.id]
        assert listed[1].info == {"framework": "torch", "epoch": 1}
        deleted = mark_checkpoint_deleted(session, checkpoint_id=old.id)
        assert deleted.state is CheckpointState.DELETED
    with store.session() as session:
        assert [c.id for c in list_checkpoints(session, trial_id=trial.id)] == [new.id]
        everything = list_checkpoints(session, trial_id=trial.id, include_deleted=True)
        assert [c.id for c in everything] == [new.id, old.id]
        with pytest.raises(NotFoundError, match="no checkpoint with id 999"):
            mark_checkpoint_deleted(session, checkpoint_id=999)
        with pytest.raises(NotFoundError, match="no trial with id 999"):
            add_checkpoint(session, trial_id=999, batches=1, path="/x", info={})


def test_session_rolls_back_when_the_block_raises(store: Store) -> None:
    with pytest.raises(RuntimeError), store.session() as session:
        create_experiment(session, name="doomed", config={}, home_dir="/runs/d")
        raise RuntimeError("boom")
    with store.session() as session:
        assert list_experiments(session) == []

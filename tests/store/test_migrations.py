"""The schema comes from migrations and must be exactly what the models describe."""

import json
import re
import shutil
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import StatementError

import trainyard.store
from trainyard.store import (
    DEFAULT_PROJECT,
    Base,
    Project,
    Store,
    alembic_config,
    create_experiment,
    current_revision,
    default_database_url,
    default_home,
    head_revision,
    list_experiments,
    list_trials,
    make_engine,
    open_store,
    upgrade_to_head,
)
from trainyard.store.curves import StoredCurve, experiment_curve_metrics, experiment_curves
from trainyard.store.migrate import MIGRATIONS_DIR
from trainyard.store.models import VERSION_TABLE

from .helpers import run_in_threads

TABLES = {
    "ty_experiments",
    "ty_trials",
    "ty_metrics",
    "ty_checkpoints",
    "ty_worker_credentials",
    "ty_users",
    "ty_projects",
    "ty_memberships",
    "ty_api_tokens",
}


def test_migrations_are_found_next_to_the_package() -> None:
    assert Path(trainyard.store.__file__).parent / "migrations" == MIGRATIONS_DIR
    for name in ("env.py", "script.py.mako", "versions/0001_initial.py"):
        assert (MIGRATIONS_DIR / name).is_file()


def test_open_store_migrates_a_fresh_database_to_head(database_url: str) -> None:
    engine = make_engine(database_url)
    assert current_revision(engine) is None
    engine.dispose()

    with open_store(database_url) as store:
        assert current_revision(store.engine) == head_revision() == "0007_worker_key"
        assert set(inspect(store.engine).get_table_names()) >= TABLES


def test_migrated_schema_matches_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_autogenerate_finds_nothing_to_migrate(store: Store, tmp_path: Path) -> None:
    """Also renders script.py.mako, which `alembic revision` needs."""
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    with store.engine.connect() as connection:
        config = alembic_config(connection)
        config.set_main_option("script_location", str(scripts))
        command.revision(config, message="nothing", autogenerate=True, rev_id="9999")
    generated = ScriptDirectory(str(scripts)).get_revision("9999")
    assert generated is not None
    assert generated.down_revision == head_revision()
    for function in ("upgrade", "downgrade"):
        body = re.search(
            rf"def {function}\(\) -> None:\n((?:    .*\n)+)", Path(generated.path).read_text()
        )
        assert body is not None
        code = [line.strip() for line in body[1].splitlines() if not line.strip().startswith("#")]
        assert code == ["pass"]


def test_downgrade_to_base_and_upgrade_again(store: Store) -> None:
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert not TABLES & set(inspect(store.engine).get_table_names())
    upgrade_to_head(store.engine)
    assert current_revision(store.engine) == head_revision()


def test_upgrading_a_current_store_keeps_its_rows(database_url: str) -> None:
    with open_store(database_url) as store, store.session() as session:
        create_experiment(session, name="kept", config={}, home_dir="/tmp/kept")
    with open_store(database_url) as store:
        upgrade_to_head(store.engine)
        with store.session() as session:
            assert [e.name for e in list_experiments(session)] == ["kept"]


def test_opening_a_current_store_takes_no_write_lock(store: Store, database_url: str) -> None:
    """Else every process opening the store would queue behind the busiest writer.

    Another connection holds the write lock; an opener that wanted it would fail, after SQLite's
    busy timeout or after the lock timeout set here for PostgreSQL.
    """
    opener_url = make_url(database_url)
    with store.engine.connect() as writer:
        if writer.dialect.name == "sqlite":
            writer.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            writer.exec_driver_sql(f"LOCK TABLE {VERSION_TABLE} IN EXCLUSIVE MODE")
            opener_url = opener_url.update_query_dict({"options": "-c lock_timeout=1000"})
        open_store(opener_url.render_as_string(hide_password=False)).close()
        writer.rollback()


@pytest.mark.timeout(120)  # a race between the migrations used to hang here
def test_processes_opening_a_fresh_store_at_once_migrate_it_once(database_url: str) -> None:
    """Each thread has its own engine, like separate processes would."""
    run_in_threads(*[lambda: open_store(database_url).close()] * 4)
    with open_store(database_url) as store:
        assert current_revision(store.engine) == head_revision()


def test_processes_switching_a_fresh_file_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    """SQLite can fail such a switch at once with "database is locked", ignoring the busy
    timeout; the engine retries. One engine per thread, like processes; repeated because
    the collision is rare."""
    num_engines = 8
    for attempt in range(30):
        url = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        engines = [make_engine(url) for _ in range(num_engines)]
        modes: list[str] = []

        def connect(engine: Engine, modes: list[str] = modes) -> None:
            with engine.connect() as connection:
                modes.append(connection.exec_driver_sql("PRAGMA journal_mode").scalar_one())

        try:
            run_in_threads(*[partial(connect, engine) for engine in engines])
        finally:
            for engine in engines:
                engine.dispose()
        assert modes == ["wal"] * num_engines


def test_env_refuses_to_run_without_a_connection() -> None:
    with pytest.raises(RuntimeError, match="passes a connection"):
        command.upgrade(alembic_config(), "head")


def test_sqlite_connections_get_wal_and_the_pragmas(sqlite_url: str) -> None:
    # Two connections at once, so the second is a fresh one from the pool.
    with (
        open_store(sqlite_url) as store,
        store.engine.connect() as first,
        store.engine.connect() as second,
    ):
        for connection in (first, second):
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 5000
            assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_default_home_and_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRAINYARD_HOME", raising=False)
    assert default_home() == Path(".trainyard")
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path))
    assert default_home() == tmp_path
    assert default_database_url(tmp_path) == f"sqlite:///{tmp_path}/trainyard.db"


def test_datetimes_come_back_aware_in_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    ended = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    with store.session() as session:
        experiment = create_experiment(session, name="tz", config={}, home_dir="/tmp/tz")
        experiment.ended_at = ended
    with store.sessionmaker() as session:
        loaded = session.get(type(experiment), experiment.id)
        assert loaded is not None
        assert loaded.ended_at == ended
        assert loaded.ended_at.tzinfo is UTC
        assert loaded.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="timezone-aware"), store.session() as session:
        experiment = create_experiment(session, name="naive", config={}, home_dir="/tmp/n")
        experiment.ended_at = datetime(2024, 5, 1)
        session.flush()


def test_a_store_of_the_previous_release_upgrades_with_its_experiments(database_url: str) -> None:
    """0001 is the schema the release before worker credentials wrote."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        _insert_old_experiment(connection, "old")
    assert "ty_worker_credentials" not in inspect(engine).get_table_names()
    engine.dispose()
    with open_store(database_url) as store:
        assert current_revision(store.engine) == head_revision()
        assert "ty_worker_credentials" in inspect(store.engine).get_table_names()
        with store.session() as session:
            assert [e.name for e in list_experiments(session)] == ["old"]


def test_a_store_of_release_0002_upgrades_into_the_default_project(database_url: str) -> None:
    """Experiments, trials and credentials written before projects existed are all kept,
    each experiment in `default` with no owner."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
        now = datetime.now(UTC)
        for name in ("first", "second"):
            _insert_old_experiment(connection, name)
        connection.execute(
            text(
                "INSERT INTO ty_trials (experiment_id, number, state, hyperparameters, created_at,"
                " batches_trained, num_restarts) SELECT id, 0, 'RUNNING', '{\"lr\": 0.1}', :now,"
                " 7, 0 FROM ty_experiments"
            ),
            {"now": now},
        )
    engine.dispose()
    with open_store(database_url) as store, store.session() as session:
        experiments = list_experiments(session)
        assert [(e.name, e.home_dir, e.owner_id) for e in experiments] == [
            ("second", "/old/second", None),
            ("first", "/old/first", None),
        ]
        default = session.scalars(select(Project).where(Project.name == DEFAULT_PROJECT)).one()
        assert {e.project_id for e in experiments} == {default.id}
        trials = [list_trials(session, experiment_id=e.id) for e in experiments]
        assert [
            [(t.number, t.hyperparameters, t.batches_trained) for t in ts] for ts in trials
        ] == [[(0, {"lr": 0.1}, 7)]] * 2
        new = create_experiment(session, name="new", config={}, home_dir="/new")
        assert new.project_id == default.id


def _insert_old_experiment(connection: Connection, name: str) -> None:
    """An experiment row as releases before 0003 wrote it (the models have moved on since)."""
    now = datetime.now(UTC)
    connection.execute(
        text(
            "INSERT INTO ty_experiments (name, state, config, home_dir, created_at, "
            "updated_at) VALUES (:name, 'RUNNING', '{}', :home, :now, :now)"
        ),
        {"name": name, "home": f"/old/{name}", "now": now},
    )


def _insert_old_trial(connection: Connection, state: str, *, batches_trained: int) -> int:
    """An experiment `old` in the default project (releases 0003 on) with one trial in
    `state`, written in SQL as those releases did; returns the trial's id."""
    now = datetime.now(UTC)
    connection.execute(
        text(
            "INSERT INTO ty_experiments (name, state, config, home_dir, created_at,"
            " updated_at, project_id) SELECT 'old', :state, '{}', '/old', :now, :now, id"
            " FROM ty_projects WHERE name = :default"
        ),
        {"now": now, "default": DEFAULT_PROJECT, "state": state},
    )
    connection.execute(
        text(
            "INSERT INTO ty_trials (experiment_id, number, state, hyperparameters, created_at,"
            " batches_trained, num_restarts) SELECT id, 0, :state, '{}', :now, :batches, 0"
            " FROM ty_experiments"
        ),
        {"now": now, "state": state, "batches": batches_trained},
    )
    return int(connection.scalar(text("SELECT max(id) FROM ty_trials")))


def test_a_store_of_release_0005_gets_the_curves_of_its_validations(database_url: str) -> None:
    """0006 builds each trial's stored curves from the validation reports already there, as
    folding them in on arrival would have (a step validated again: the newest value)."""
    engine = make_engine(database_url)
    reports = [(10, 0.6), (20, 0.7), (30, 0.65), (20, 0.9)]
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0005_roc")
        trial_id = _insert_old_trial(connection, "COMPLETED", batches_trained=30)
        for kind, (step, auc) in [("validation", r) for r in reports] + [("training", (5, 0.1))]:
            connection.execute(
                text(
                    'INSERT INTO ty_metrics (trial_id, kind, batches, epoch, "values",'
                    " reported_at) VALUES (:trial, :kind, :step, 0, :values, :now)"
                ),
                {
                    "trial": trial_id,
                    "kind": kind,
                    "step": step,
                    "values": json.dumps({"val_auc": auc, "val_rej50": "inf"}),
                    "now": datetime.now(UTC),
                },
            )
    engine.dispose()
    with open_store(database_url) as store, store.session() as session:
        experiment_id = list_experiments(session)[0].id
        curves = experiment_curves(
            session, experiment_id=experiment_id, metric="val_auc", mode="max"
        )
        assert curves == {
            trial_id: StoredCurve(
                best=0.9, best_step=20, steps_json="[10, 20, 30]", values_json="[0.6, 0.9, 0.65]"
            )
        }
        assert experiment_curve_metrics(session, experiment_id=experiment_id) == [
            "val_auc",
            "val_rej50",
        ]


def test_a_store_of_release_0006_keeps_its_worker_pids_as_worker_keys(database_url: str) -> None:
    """0007 renames `worker_pid` to `worker_key` (a local pid, or a SLURM job id) and widens it:
    a running trial's pid survives, and a federated SLURM job id (over 2^31) fits."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0006_curves")
        trial_id = _insert_old_trial(connection, "RUNNING", batches_trained=5)
        connection.execute(
            text("UPDATE ty_trials SET worker_pid = 4242 WHERE id = :id"), {"id": trial_id}
        )
    engine.dispose()
    with open_store(database_url) as store, store.session() as session:
        (trial,) = list_trials(session, experiment_id=list_experiments(session)[0].id)
        assert (trial.worker_key, trial.batches_trained) == (4242, 5)
        trial.worker_key = 63 << 26 | 12345  # job 12345 of cluster 63 of a SLURM federation
        session.flush()
        session.expire_all()
        assert list_trials(session, experiment_id=trial.experiment_id)[0].worker_key == (
            63 << 26 | 12345
        )

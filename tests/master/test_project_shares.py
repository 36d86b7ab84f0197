"""Projects' shares and quotas on a real store (SQLite and PostgreSQL): the placement reads the
settings an admin set, usage is accounted and decays with the half-life, waiting experiments
say which quota holds them, and submissions a project may never run are refused by name."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.master.conftest import experiment_config
from trainyard.config import ExperimentConfig
from trainyard.config.facility import load_facility
from trainyard.config.server import SharesSpec
from trainyard.errors import PermissionDeniedError, QuotaExceededError
from trainyard.master.api.app import create_app
from trainyard.master.facility_loop import FacilityLoop
from trainyard.master.project_disk import ProjectDisk, folder_bytes, format_bytes
from trainyard.master.project_shares import ProjectShares
from trainyard.master.service import MasterService
from trainyard.scheduler.placement import ExperimentWant
from trainyard.store import Project, accounts, utcnow
from trainyard.store import shares as share_rows


@pytest.fixture
def shares(service: MasterService, tmp_path: Path) -> ProjectShares:
    disk = ProjectDisk(service.settings.resolved_home(), refresh_s=0.0)
    return ProjectShares(service.store, SharesSpec(half_life_hours=1.0), disk)


def _project(service: MasterService, name: str, **settings: object) -> Project:
    with service.store.session() as session:
        project = accounts.create_project(session, name=name)
        return share_rows.update_project(session, project, settings)


def test_placement_follows_the_stored_shares_and_quotas(
    service: MasterService, shares: ProjectShares
) -> None:
    _project(service, "big", share=3.0)
    _project(service, "small", max_concurrent_trials=1)
    wants = [ExperimentWant(1, "big", 8), ExperimentWant(2, "small", 8)]
    placement = shares.place("default", 8, wants)
    assert placement.offers == {1: 7, 2: 1}  # small's quota leaves its slots to big
    assert "project 'small' may use 1 trial(s) at once" in placement.waits[2]


def test_usage_is_accounted_each_tick_and_decays_with_the_half_life(
    service: MasterService, shares: ProjectShares
) -> None:
    _project(service, "alpha")
    start = utcnow()
    wants = [ExperimentWant(1, "alpha", 4, held=4)]
    shares.place("default", 4, wants, now=start)
    shares.place("default", 4, wants, now=start + timedelta(seconds=100))
    with service.store.session() as session:
        alpha = accounts.find_project(session, "alpha")
        assert alpha is not None
        (row,) = share_rows.project_usage(session, alpha.id).values()
        assert row.slot_seconds == pytest.approx(400.0)  # 4 slots x 100 s
    # An hour later (one half-life) alpha holds nothing: its history counts half.
    _project(service, "beta")
    later = start + timedelta(seconds=100 + 3600)
    idle = [ExperimentWant(1, "alpha", 10), ExperimentWant(2, "beta", 10)]
    with service.store.session() as session:
        usage = share_rows.project_usage(session, alpha.id)["default"].slot_seconds
    assert usage == pytest.approx(400.0)  # an idle project's history is not rewritten...
    # ...but read decayed: all the pool's history is alpha's, so its weight is a quarter of
    # beta's (share * 2 ** -(used fraction / entitled fraction) = 2 ** -2): 2 and 8 of 10.
    assert shares.place("default", 10, idle, now=later).offers == {1: 2, 2: 8}
    # Holding one slot for another hour adds 3600 slot-seconds to the 400 halved twice.
    again = later + timedelta(hours=1)
    shares.place("default", 4, [ExperimentWant(1, "alpha", 4, held=1)], now=again)
    with service.store.session() as session:
        usage = share_rows.project_usage(session, alpha.id)["default"].slot_seconds
    assert usage == pytest.approx(100.0 + 3600.0)


def test_a_waiting_experiment_says_which_quota_and_the_message_clears(
    service: MasterService, shares: ProjectShares, config: ExperimentConfig
) -> None:
    project = _project(service, "alpha", max_concurrent_trials=2)
    experiment_id = service.create_experiment(config, project=project)
    wants = [ExperimentWant(experiment_id, "alpha", 4, held=2)]
    placement = shares.place("default", 8, wants)
    shares.note_waits([experiment_id], placement.waits)
    message = service.get_experiment(experiment_id).message
    assert message is not None
    assert message.startswith(
        "waiting for quota max_concurrent_trials: project 'alpha' may use 2 trial(s) at once "
        "and use 2 now"
    )
    shares.note_waits([experiment_id], {})
    assert service.get_experiment(experiment_id).message is None


def test_a_pool_the_project_may_not_use_is_refused_naming_its_pools(
    service: MasterService, shares: ProjectShares, config: ExperimentConfig
) -> None:
    project = _project(service, "alpha", pools=["cpu", "gpu-small"])
    with pytest.raises(PermissionDeniedError) as refused:
        shares.check_submission(config, project)
    assert str(refused.value) == (
        "project 'alpha' may not use pool 'default' (resources.pool); its pools: cpu, "
        "gpu-small; set resources.pool to one of them, or ask a facility admin "
        "(`trainyard admin project set alpha --pools ...`)"
    )


def test_a_trial_larger_than_a_quota_is_refused_naming_the_quota(
    service: MasterService, shares: ProjectShares, tmp_path: Path
) -> None:
    project = _project(service, "alpha", user_max_slots=2)
    config = experiment_config(tmp_path, "wide")
    wide = config.model_copy(
        update={"resources": config.resources.model_copy(update={"slots_per_trial": 4})}
    )
    with pytest.raises(QuotaExceededError) as refused:
        shares.check_submission(wide, project)
    assert str(refused.value).startswith(
        "a trial of 'wide' needs 4 slot(s) (resources.slots_per_trial) but project 'alpha' "
        "allows 2 at once (user_max_slots)"
    )


def test_a_project_at_its_disk_cap_is_refused_with_use_cap_and_what_to_do(
    service: MasterService, shares: ProjectShares, config: ExperimentConfig
) -> None:
    project = _project(service, "alpha", disk_cap_bytes=2048)
    shares.check_submission(config, project)  # nothing written yet
    folder = shares.disk.folder("alpha") / "experiments" / "00001-x" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"x" * 3072)
    assert folder_bytes(shares.disk.folder("alpha")) == 3072
    with pytest.raises(QuotaExceededError) as refused:
        shares.check_submission(config, project)
    assert str(refused.value) == (
        "project 'alpha' uses 3.0 KiB of checkpoints and logs, at its disk cap of 2.0 KiB "
        f"(disk_cap); delete experiments' checkpoints under {shares.disk.folder('alpha')}, or "
        "ask a facility admin to raise it (`trainyard admin project set alpha --disk-cap SIZE`)"
    )


def test_disk_use_is_cached_for_the_refresh_interval(tmp_path: Path) -> None:
    now = [0.0]
    disk = ProjectDisk(tmp_path, refresh_s=60, clock=lambda: now[0])
    (tmp_path / "projects" / "p").mkdir(parents=True)
    (tmp_path / "projects" / "p" / "log").write_bytes(b"x" * 10)
    assert disk.bytes_used("p") == 10
    (tmp_path / "projects" / "p" / "log2").write_bytes(b"x" * 5)
    assert disk.bytes_used("p") == 10
    assert disk.bytes_used("p", fresh=True) == 15
    now[0] = 61
    (tmp_path / "projects" / "p" / "log3").write_bytes(b"x")
    assert disk.bytes_used("p") == 16
    assert (format_bytes(512), format_bytes(3 * 2**30)) == ("512 B", "3.0 GiB")


def test_the_api_answers_a_refused_submission_with_its_status_and_message(
    service: MasterService,
) -> None:
    _project(service, "alpha", pools=["gpu"])
    _project(service, "beta", max_concurrent_trials=0)
    loop = FacilityLoop(
        service=service,
        facility=load_facility(None),
        settings=service.settings,
        master_url="http://127.0.0.1:9",
    )
    api = TestClient(create_app(service, submitter=loop))  # auth none: the local admin
    submission = {
        "yaml": "name: s\nentrypoint: python -c 'pass'\n",
        "source": "s.yaml",
        "project": "alpha",
    }
    refused = api.post("/api/v1/experiments", json=submission)
    assert refused.status_code == 403
    assert (
        "project 'alpha' may not use pool 'default' (resources.pool); its pools: gpu"
        in (refused.json()["detail"])
    )
    refused = api.post("/api/v1/experiments", json={**submission, "project": "beta"})
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(
        "project 'beta' may run 0 trials at once (max_concurrent_trials)"
    )
    assert service.list_experiments() == []

"""`trainyard server` on SQLite, end to end: refusals with the messages `trainyard validate`
prints, control from the CLI, start-up refusals, and two experiments that finish across a
restart that resumes them (tests/integration/test_server_postgres.py: the same on PostgreSQL)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.helpers import run_cli, wait_for
from tests.integration.server_process import (
    TOKEN,
    ServerProcess,
    check_same_tables,
    submit_files,
    tiny_experiment,
)
from trainyard.master.facility_loop import SERVER_STOPPED
from trainyard.protocol import ExperimentState, TrialState


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server"))
    process.start()
    yield process
    if process.process is not None and process.process.poll() is None:
        assert process.stop() == 0, process.log.read_text()


def test_submit_refuses_with_the_messages_of_validate(
    server: ServerProcess, toy_data: Path, tmp_path: Path
) -> None:
    missing = tiny_experiment(toy_data, "missing")
    missing["data"]["train"] = "nowhere/*.parquet"  # found missing on the server's side
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(missing))
    submitted = server.cli("submit", "missing.yaml", cwd=tmp_path)
    validated = run_cli(["validate", "missing.yaml"], server.env, cwd=tmp_path)
    assert (submitted.returncode, validated.returncode) == (2, 2)
    assert submitted.stderr == validated.stderr
    assert f"no dataset file matches '{tmp_path / 'nowhere/*.parquet'}'" in submitted.stderr
    elsewhere = {**tiny_experiment(toy_data, "elsewhere"), "resources": {"pool": "gpus"}}
    (tmp_path / "elsewhere.yaml").write_text(yaml.safe_dump(elsewhere))
    result = server.cli("submit", "elsewhere.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "`resources.pool`: no pool 'gpus' in built-in facility (one local pool, 'default'); "
        "pools: default"
    ) in result.stderr


def test_the_api_checks_a_submitted_file_itself(server: ServerProcess) -> None:
    answer = httpx.post(
        f"{server.url}/api/v1/experiments",
        json={"yaml": "name: [unclosed\n", "source": "bad.yaml"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(
        "bad.yaml is invalid (1 problem(s)):\n  - not valid YAML at line"
    )
    refused = httpx.post(f"{server.url}/api/v1/experiments", json={"yaml": "x", "source": "s"})
    assert refused.status_code == 401


def test_the_dashboard_link_of_a_loopback_server_is_private(server: ServerProcess) -> None:
    """`auth: none` (loopback): the dashboard's sign-in link goes to a 0600 file, never to
    the log, and signs a browser in."""
    link_file = server.root / "state" / "dashboard.url"
    assert link_file.stat().st_mode & 0o777 == 0o600
    link = link_file.read_text().strip()
    assert link.startswith(f"{server.url}/login?token=")
    assert link.split("token=")[1] not in server.log.read_text()
    assert f"its sign-in link is in {link_file}" in server.log.read_text()
    with httpx.Client() as browser:
        assert browser.get(f"{server.url}/").status_code == 401
        assert browser.get(link).status_code == 303
        assert browser.get(f"{server.url}/").status_code == 200


def test_submit_needs_a_server(server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli(["submit", "any.yaml"], server.env, cwd=tmp_path)
    assert result.returncode == 2
    assert "give --master URL or set TRAINYARD_MASTER" in result.stderr


def test_pause_activate_and_kill_through_the_server(
    server: ServerProcess, toy_data: Path, tmp_path: Path
) -> None:
    file = tmp_path / "long.yaml"
    file.write_text(yaml.safe_dump(tiny_experiment(toy_data, "long", batches=100_000)))
    ref = server.cli("submit", str(file)).stdout.strip()
    for action, state in (("pause", "PAUSED"), ("activate", "RUNNING"), ("kill", "CANCELED")):
        result = server.cli(action, ref)
        assert result.returncode == 0, result.stderr
        assert f"experiment {ref} (long) is now {state}" in result.stdout
    again = server.cli("kill", ref)
    assert again.returncode == 2
    assert "is CANCELED; only a PAUSED or QUEUED or RUNNING experiment can be killed" in (
        again.stderr
    )
    missing = server.cli("show", "no-such-experiment")
    assert missing.returncode == 2
    assert "no experiment named 'no-such-experiment'" in missing.stderr


def test_start_up_refusals(server: ServerProcess, tmp_path: Path) -> None:
    second = run_cli(["server", "--config", str(server.config)], server.env)
    assert second.returncode == 2
    assert "one SQLite file serves one server" in second.stderr
    assert "high availability (two servers on one store) needs PostgreSQL" in second.stderr
    fresh = tmp_path / "server.yaml"
    fresh.write_text("prot: 1\n")
    misspelt = run_cli(["server", "migrate", "--config", str(fresh)], server.env)
    assert misspelt.returncode == 2
    assert "`prot`: unknown key 'prot'; did you mean 'port'?" in misspelt.stderr


def test_a_stopped_server_resumes_its_experiments_when_it_starts(
    server: ServerProcess, toy_data: Path, tmp_path: Path
) -> None:
    """Two experiments at once; SIGTERM while the longer trains: its trial checkpoints and it
    waits QUEUED in the store; the next server continues it from that checkpoint, and both
    finish."""
    ids = submit_files(server, toy_data, tmp_path / "files", {"short": 10, "resumed": 60})
    client = server.client()
    wait_for(
        lambda: any(r.trial.batches_trained >= 20 for r in client.trial_records(ids[1])),
        timeout=300,
        what="the longer trial to train 20 batches",
    )
    assert server.stop(signal.SIGTERM) == 0
    stopped = run_cli(
        ["show", ids[1]], {**server.env, "TRAINYARD_HOME": str(server.root / "state")}
    )
    assert "resumed: QUEUED" in stopped.stdout
    assert SERVER_STOPPED in stopped.stdout
    assert "PAUSED" in stopped.stdout  # the trial, with its checkpoint
    server.start()
    for ref in ids:
        server.wait_until(ref, {ExperimentState.COMPLETED, ExperimentState.ERRORED})
        assert client.get_experiment(ref).state == ExperimentState.COMPLETED
    (record,) = client.trial_records(ids[1])
    assert (record.trial.state, record.trial.num_restarts) == (TrialState.COMPLETED, 0)
    assert "step-00000060" in (record.checkpoint or "")
    log = server.cli("logs", str(record.trial.id))
    assert log.returncode == 0
    assert " resumed from " in log.stdout
    assert "resumed: COMPLETED" in check_same_tables(server, ids[1])

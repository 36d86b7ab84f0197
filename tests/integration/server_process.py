"""A real `trainyard server` process for end-to-end tests, and what both store backends check.

One server per test module (starting one costs seconds); tests reach it with the real CLI
(`trainyard submit`, `list`, `show`, ... with --master) and with the typed client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.integration.helpers import CLI, cli_env, experiment, run_cli, wait_for
from trainyard.cli.client import MasterClient
from trainyard.protocol import ExperimentState

TOKEN = "test-admin-token"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """`trainyard server --config <root>/server.yaml`, migrated first (unless a replica of
    another on the same database, `migrate=False`); `start` again after `stop` to restart it
    on the same store."""

    root: Path
    database: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    storage: str = "storage"
    """Relative to root; replicas of one facility share an absolute one."""
    migrate: bool = True

    def __post_init__(self) -> None:
        raw: dict[str, Any] = {"port": self.port, "storage": self.storage}
        if self.database:
            raw["database"] = self.database
        self.config.write_text(yaml.safe_dump(raw))
        if not self.migrate:
            return
        result = run_cli(["server", "migrate", "--config", str(self.config)], self.env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "from revision (empty) to " in result.stdout

    @property
    def config(self) -> Path:
        return self.root / "server.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """A client's and the server's environment: the token, fast polling, no master set."""
        env = cli_env(self.root / "embedded-home", TRAINYARD_TOKEN=TOKEN)
        env.pop("TRAINYARD_MASTER", None)
        return env

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def client(self) -> MasterClient:
        return MasterClient(self.url, token=TOKEN)

    def start(self, *, wait: bool = True) -> None:
        """Start the server; unless `wait` is False, until it answers (`wait_ready`)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "server", "--config", str(self.config)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        wait_for(self._answers, timeout=START_TIMEOUT_S, what=f"the server on {self.url}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; its exit code."""
        assert self.process is not None
        os.kill(self.process.pid, sig)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI as a client of this server."""
        return run_cli([*args, "--master", self.url], self.env, cwd=cwd)

    def wait_until(self, ref: str, states: set[ExperimentState], timeout: float = 300) -> None:
        client = self.client()
        wait_for(
            lambda: client.get_experiment(ref).state in states,
            timeout=timeout,
            what=f"experiment {ref} to reach {sorted(states)}; server log: {self.log}",
        )


def tiny_experiment(toy_data: Path, name: str, *, batches: int = 10) -> dict[str, Any]:
    """ParticleNet-Lite for `batches` batches, checkpointed every 5, validated at the end."""
    config = experiment(toy_data, name=name)
    config["training"].update(
        max_length={"batches": batches}, validation_period={"batches": batches}
    )
    config["checkpoint"] = {"period": {"batches": 5}, "keep": 1}
    return config


def submit_files(
    server: ServerProcess, toy_data: Path, folder: Path, batches: dict[str, int]
) -> list[str]:
    """One experiment file per name, its data paths relative to the file's folder, each
    submitted with `trainyard submit` from that folder; their ids."""
    folder.mkdir()
    relative = Path(os.path.relpath(toy_data, folder))
    ids = []
    for name, length in batches.items():
        config = tiny_experiment(relative, name, batches=length)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
        result = server.cli("submit", f"{name}.yaml", cwd=folder)
        assert result.returncode == 0, result.stderr
        assert f"({name}) is QUEUED" in result.stderr
        ids.append(result.stdout.strip())
    return ids


def check_same_tables(server: ServerProcess, ref: str) -> str:
    """`list` and `show` through the server print what they print on its store; `show`'s."""
    store_env = {**server.env, **_store_env(server)}
    for args in (["list"], ["show", ref]):
        through_server = server.cli(*args)
        assert through_server.returncode == 0, through_server.stderr
        assert through_server.stdout == run_cli(args, store_env).stdout
    return through_server.stdout


def check_two_experiments_finish(server: ServerProcess, toy_data: Path, folder: Path) -> None:
    """Two experiments submitted at once both complete, shown alike through the server."""
    ids = submit_files(server, toy_data, folder, {"alpha": 10, "beta": 10})
    for ref in ids:
        server.wait_until(ref, {ExperimentState.COMPLETED, ExperimentState.ERRORED})
    for ref in ids:
        assert server.client().get_experiment(ref).state == ExperimentState.COMPLETED
    shown = check_same_tables(server, ids[0])
    assert f"experiment {ids[0]} alpha: COMPLETED" in shown
    assert "10/10" in shown


def _store_env(server: ServerProcess) -> dict[str, str]:
    """The embedded CLI's environment on the server's own store."""
    database = server.database or f"sqlite:///{server.root / 'state' / 'trainyard.db'}"
    return {"TRAINYARD_DATABASE_URL": database, "TRAINYARD_HOME": str(server.root / "storage")}

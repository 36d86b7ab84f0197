"""The facility benchmark's services: PostgreSQL, an OIDC provider, `trainyard server`s.

All real processes on this machine, started here and stopped by PID: the test suite's
throwaway PostgreSQL (tests/postgres.py: a fresh `initdb`, unix socket only, fsync off) and
its OIDC provider (tests/oidc_provider.py: RS256 tokens minted on request, standing in for the
users' sign-ins), and one or two `trainyard server` processes on one database, as a facility
runs them. With `slurm_pool`, the servers' one pool is a real SLURM cluster on this machine
(the test suite's, deploy/slurm/cluster-up.sh) instead of this machine's cores.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.oidc_provider import provider_process
from tests.postgres import start_server, stop_server

AUDIENCE = "trainyard"
ADMIN_SUBJECT = "facility-admin"
TOKEN_LIFETIME_S = 3 * 3600
START_TIMEOUT_S = 120.0
DEPLOY_SLURM = Path(__file__).parents[1] / "deploy" / "slurm"
CLI = [sys.executable, "-c", "from trainyard.cli.app import main; main()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """One `trainyard server` of the facility, its log in its own file."""

    name: str
    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "server", "--config", str(self.config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.name} exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.name} did not answer in {START_TIMEOUT_S} s")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL, as a crashed machine: nothing is paused or handed over."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill()

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False


@dataclass
class Facility:
    """The running facility: its database, provider and servers."""

    database_url: str
    issuer: str
    servers: list[ServerProcess]
    root: Path

    def token(self, subject: str) -> str:
        """An access token of `subject` signed by the provider (their sign-in)."""
        answer = httpx.post(
            f"{self.issuer}/mint",
            json={"sub": subject, "username": subject, "exp_in": TOKEN_LIFETIME_S},
            timeout=10,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])


@contextmanager
def facility(
    root: Path,
    *,
    servers: int,
    server_options: dict[str, Any],
    env: dict[str, str] | None = None,
) -> Iterator[Facility]:
    """PostgreSQL, a provider and `servers` servers on one database (by default the built-in
    facility: one local pool of this machine's cores; `server_options` may name a facility
    file, and `env` adds to the servers' environment); stopped on exit."""
    with ExitStack() as stack:
        postgres = start_server()
        stack.callback(stop_server, postgres)
        with postgres.connect() as connection:
            connection.execute("CREATE DATABASE facility")
        database_url = postgres.url("facility")
        issuer = stack.enter_context(provider_process())
        env = {**_server_env(), **(env or {})}
        processes = []
        for index in range(servers):
            config = root / f"server-{index}.yaml"
            port = free_port()
            raw = {
                "database": database_url,
                "port": port,
                "state_dir": f"state-{index}",
                "storage": "storage",
                "auth": {
                    "oidc": {"issuer": issuer, "audience": AUDIENCE},
                    "facility_admins": [ADMIN_SUBJECT],
                },
                **server_options,
            }
            config.write_text(yaml.safe_dump(raw))
            processes.append(
                ServerProcess(f"server-{index}", config, port, root / f"server-{index}.log")
            )
        _migrate(processes[0].config, env)
        for process in processes:
            process.start(env)
            stack.callback(process.stop)
        yield Facility(database_url, issuer, processes, root)


@contextmanager
def slurm_pool(root: Path, *, nodes: int, cpus: int) -> Iterator[tuple[Path, dict[str, str]]]:
    """A real SLURM cluster of `nodes` simulated nodes with `cpus` one-core slots each
    (deploy/slurm/cluster-up.sh, the test suite's cluster), and a facility file whose one
    pool, `default`, is its `cpu` partition; yields the file and the servers' environment
    (SLURM_CONF). Stopped on exit."""
    state = root / "slurm"
    up = subprocess.run(
        [DEPLOY_SLURM / "cluster-up.sh", str(state)],
        env={**os.environ, "TRAINYARD_SLURM_NODES": str(nodes), "TRAINYARD_SLURM_CPUS": str(cpus)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        if up.returncode != 0:
            raise RuntimeError(f"cluster-up.sh failed:\n{up.stdout}{up.stderr}")
        pool = {
            "executor": "slurm",
            "slurm": {
                "partition": "cpu",
                "tasks_per_node": cpus,
                "cpus_per_task": 1,
                "mem_per_task": "300M",
                "max_nodes": nodes,
                "status_interval_s": 0.5,
            },
        }
        path = root / "facility.yaml"
        path.write_text(yaml.safe_dump({"pools": {"default": pool}}))
        yield path, {"SLURM_CONF": str(state / "etc" / "slurm.conf")}
    finally:
        subprocess.run(
            [DEPLOY_SLURM / "cluster-down.sh", str(state)], capture_output=True, check=False
        )


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["TRAINYARD_POLL_INTERVAL_S"] = "0.5"
    return env


def _migrate(config: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [*CLI, "server", "migrate", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed: {result.stdout}{result.stderr}")

"""Where trainyard keeps its state and how patient it is: read from the environment once.

Experiment files never carry these; a facility sets them for everyone (TRAINYARD_* variables).
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Master-side settings. Every field maps to TRAINYARD_<FIELD> (e.g. TRAINYARD_HOME)."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", frozen=True)

    home: Path = Path(".trainyard")
    """Folder for the embedded database, experiment logs and checkpoints."""
    database_url: str | None = None
    """SQLAlchemy URL; default: SQLite at <home>/trainyard.db."""
    facility: Path | None = None
    """Facility file naming the pools experiments may use (SLURM partitions, ...); default:
    one local pool, "default". `trainyard run --facility FILE` overrides it."""
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    """How often a worker says it is alive (from its training loop, so a hang goes quiet)."""
    heartbeat_timeout_s: float = Field(default=300.0, gt=0)
    """Silence after which a worker counts as hung and is killed."""
    stop_grace_s: float = Field(default=60.0, gt=0)
    """Time a stopped worker gets to write its checkpoint before it is killed."""
    master_host: str = "127.0.0.1"
    """Address the embedded Master listens on. Workers on other nodes (SLURM, Kubernetes)
    need one they can reach, e.g. 0.0.0.0; the bearer token still guards every call."""
    master_advertise_host: str | None = None
    """Host name workers use to reach the Master; default: master_host, or this machine's
    fully qualified name when master_host is 0.0.0.0."""
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)
    """Request bodies larger than this are refused (413) before any handler reads them."""
    poll_interval_s: float = Field(default=0.5, gt=0)
    fork_workers: bool = True
    """Start one-slot workers of a local CPU pool as forks of a warm process that imported torch
    and the worker once, saving seconds per trial; false starts each as a fresh process."""
    log_tail_lines: int = Field(default=60, gt=0)
    """Lines of a failed worker's log kept with the trial (torchrun's summary alone is ~40)."""
    staging_cache_max_gb: float | None = Field(default=None, gt=0)
    """Size limit of the staging cache (<home>/cache/staged): the Master evicts the least
    recently used datasets past it, never one a trial reads; default: no limit."""
    staging_cache_check_s: float = Field(default=300.0, gt=0)
    """How often the Master checks the staging cache against its limit."""

    def resolved_home(self) -> Path:
        """The home folder as an absolute path (workers may run in another directory)."""
        return self.home.expanduser().resolve()

    def staging_dir(self) -> Path:
        """The staging cache, shared by every trial of this Master."""
        return self.resolved_home() / "cache" / "staged"

    def advertised_master_host(self) -> str:
        """The host in the Master URL handed to workers."""
        if self.master_advertise_host:
            return self.master_advertise_host
        return socket.getfqdn() if self.master_host in ("0.0.0.0", "::") else self.master_host

    def resolved_database_url(self) -> str:
        """The configured database, or the embedded SQLite file under home."""
        return self.database_url or f"sqlite:///{self.resolved_home() / 'trainyard.db'}"

"""The server file: how one shared `trainyard server` runs (store, address, TLS, sign-in, pools,
shares).

Written by a facility's operators. Validated like the experiment and facility files: every
problem at once, key paths, did-you-mean for misspelt keys. Relative paths are taken against
the server file's own folder, so the file means the same whatever directory the server starts
in. The database URL may carry a password: messages and logs only ever show it masked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from trainyard.config._strict import SECRET_VALUE_ERROR, Strict
from trainyard.config.auth import AuthConfig, AuthSpec
from trainyard.config.facility import yaml_problem
from trainyard.config.loader import format_validation_error
from trainyard.errors import ConfigError
from trainyard.suggest import did_you_mean

DEFAULT_PORT = 8600
DATABASE_FILE = "trainyard.db"
_DRIVERS = ("sqlite", "postgresql+psycopg")


class TlsSpec(Strict):
    """The server's own certificate; leave out `tls` behind a reverse proxy that terminates it."""

    certificate: Path
    """PEM certificate (chain) file."""
    key: Path
    """PEM private key file of the certificate."""


class PreemptionSpec(Strict):
    """A starved project may take slots back from over-share ones (off by default)."""

    enabled: bool = False
    min_run_minutes: float = Field(default=10.0, ge=0)
    """A trial runs at least this long before it may be preempted (checkpoint, requeue)."""


class SharesSpec(Strict):
    """How a pool's slots are shared between projects (docs/operators/server.md, "Shares and
    quotas"); each project's own share, quotas and pools are set with `trainyard admin`."""

    half_life_hours: float = Field(default=168.0, gt=0)
    """Past use counts half after this long (Slurm's PriorityDecayHalfLife, Kueue's
    usageHalfLifeTime; both suggest a week)."""
    default_share: float = Field(default=1.0, gt=0)
    """The weight of a project whose share was never set."""
    disk_usage_refresh_s: float = Field(default=300.0, gt=0)
    """How long a project's measured disk use is trusted before its folders are walked again."""
    preemption: PreemptionSpec = PreemptionSpec()


class ServerConfig(Strict):
    """One server file."""

    state_dir: Path = Path("state")
    """Folder of the server's own state: the SQLite database (when `database` is not set) and
    its lock file."""
    database: str | None = None
    """SQLAlchemy URL of the store: sqlite:///FILE, or postgresql+psycopg://USER:PASSWORD@HOST/DB
    for a facility; default: SQLite at <state_dir>/trainyard.db."""
    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 for every interface (needs `auth` other than none)."""
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    advertise_host: str | None = None
    """Host name workers use to reach the server; default: host, or this machine's fully
    qualified name when host is 0.0.0.0."""
    tls: TlsSpec | None = None
    auth: AuthConfig = "none"
    """`none` (loopback only) or an `oidc:` section (see docs/operators/server.md)."""
    facility: Path | None = None
    """Facility file with the pools; default: one local pool, "default", on this machine."""
    storage: Path | None = None
    """Folder under which each experiment gets its folder (checkpoints, logs); it must be
    visible to the workers at the same path. Default: state_dir."""
    shares: SharesSpec = SharesSpec()

    @field_validator("database")
    @classmethod
    def _known_driver(cls, database: str | None) -> str | None:
        if database is None:
            return None
        try:
            url = make_url(database)
        except ArgumentError:
            raise PydanticCustomError(
                SECRET_VALUE_ERROR,
                "not a database URL; write sqlite:///FILE or "
                "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE",
            ) from None
        if url.drivername not in _DRIVERS:
            raise PydanticCustomError(
                SECRET_VALUE_ERROR,
                f"driver {url.drivername!r} is not supported; use {' or '.join(_DRIVERS)}",
            )
        return database

    @property
    def database_url(self) -> URL:
        """The store's URL (password included: pass it to the engine, never print it)."""
        return make_url(self.database or f"sqlite:///{self.state_dir / DATABASE_FILE}")

    @property
    def shown_database(self) -> str:
        """The store's URL for messages and logs, password masked."""
        return self.database_url.render_as_string(hide_password=True)

    @property
    def storage_root(self) -> Path:
        return self.storage or self.state_dir

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


def load_server_config(path: Path | str) -> ServerConfig:
    """The server file at `path`, with relative paths made absolute against its folder.

    Raises:
        ConfigError: the file is missing, is not YAML, has any invalid key or value, or names
            a TLS or facility file that does not exist.
    """
    path = Path(path)
    source = f"server file {path}"
    if not path.is_file():
        raise ConfigError([f"no such file: {path.resolve()} (from --config)"], source=source)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {yaml_problem(err)}"], source=source) from err
    return parse_server_config(raw, base_dir=path.resolve().parent, source=source)


def parse_server_config(raw: Any, *, base_dir: Path, source: str = "server file") -> ServerConfig:
    """Validate a decoded server file; paths become absolute against `base_dir`."""
    if not isinstance(raw, dict):
        raise ConfigError(
            [
                "the top level must be a mapping of keys (database, host, ...), got "
                + type(raw).__name__
            ],
            source=source,
        )
    auth, problems = _parse_auth(raw.get("auth", "none"))
    rest = {key: value for key, value in raw.items() if key != "auth"}
    try:
        config = ServerConfig.model_validate(rest)
    except ValidationError as err:
        raise ConfigError(
            problems + format_validation_error(err, rest, root=ServerConfig), source=source
        ) from None
    config = _absolute_paths(config, base_dir).model_copy(update={"auth": auth})
    problems += _missing_files(config)
    if problems:
        raise ConfigError(problems, source=source)
    return config


def _parse_auth(raw: Any) -> tuple[AuthConfig, list[str]]:
    """The `auth` value, checked apart from the rest: its two forms (the word `none`, or a
    section) would otherwise each report their own errors for the one the file did not use."""
    if raw == "none":
        return "none", []
    if not isinstance(raw, dict):
        hint = did_you_mean(str(raw), ["none"])
        return "none", [
            f"`auth`: {raw!r} is not allowed; {hint}use none (loopback only) or an `oidc:` "
            "section with issuer and audience"
        ]
    try:
        return AuthSpec.model_validate(raw), []
    except ValidationError as err:
        problems = format_validation_error(err, raw, root=AuthSpec)
        return "none", [problem.replace("`", "`auth.", 1) for problem in problems]


def _absolute_paths(config: ServerConfig, base_dir: Path) -> ServerConfig:
    def absolute(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else base_dir / path

    update: dict[str, Any] = {"state_dir": absolute(config.state_dir)}
    if config.facility is not None:
        update["facility"] = absolute(config.facility)
    if config.storage is not None:
        update["storage"] = absolute(config.storage)
    if config.tls is not None:
        update["tls"] = TlsSpec(
            certificate=absolute(config.tls.certificate), key=absolute(config.tls.key)
        )
    url = make_url(config.database) if config.database else None
    if url is not None and url.get_backend_name() == "sqlite" and url.database:
        database = str(absolute(Path(url.database)))
        update["database"] = url.set(database=database).render_as_string(hide_password=False)
    return config.model_copy(update=update)


def _missing_files(config: ServerConfig) -> list[str]:
    files = {"facility": config.facility}
    if config.tls is not None:
        files |= {"tls.certificate": config.tls.certificate, "tls.key": config.tls.key}
    return [
        f"`{key}`: no such file: {path}"
        for key, path in files.items()
        if path is not None and not path.is_file()
    ]

"""Which token the CLI sends to a shared Master, and the sign-ins `trainyard login` keeps.

TRAINYARD_TOKEN when set (a personal API token, for scripts and batch jobs), else the stored
sign-in (renewed with its refresh token when about to expire), else none (a Master with
`auth: none`). Sign-ins are kept per Master in a file only the user can read (0600) under
their config folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from trainyard.errors import TrainyardError

TOKEN_ENV = "TRAINYARD_TOKEN"
REFRESH_MARGIN_S = 30.0
"""An access token this close to its expiry is renewed first, so it cannot expire in flight."""


class StoredLogin(BaseModel):
    """One Master's sign-in, as kept in the credentials file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str
    token_endpoint: str
    client_id: str
    access_token: str
    refresh_token: str | None
    expires_at: float


_LOGINS = TypeAdapter(dict[str, StoredLogin])


def credentials_file() -> Path:
    """$XDG_CONFIG_HOME/trainyard/credentials.json (default ~/.config/...)."""
    root = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(root) / "trainyard" / "credentials.json"


def load_logins(path: Path) -> dict[str, StoredLogin]:
    if not path.exists():
        return {}
    try:
        return _LOGINS.validate_json(path.read_bytes())
    except ValueError as error:
        raise TrainyardError(
            f"{path} is not a trainyard credentials file ({error}); delete it and run "
            "`trainyard login` again"
        ) from error


def save_login(path: Path, login: StoredLogin) -> None:
    """Add or replace one Master's sign-in; the file is created 0600, written atomically."""
    logins = load_logins(path) | {login.master: login}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(_LOGINS.dump_json(logins, indent=2))
    os.replace(temporary, path)


def bearer_for(master: str, path: Path | None = None) -> str | None:
    """The token to send to `master`: TRAINYARD_TOKEN, else the stored sign-in (renewed
    when about to expire), else None."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = path or credentials_file()
    login = load_logins(path).get(master.rstrip("/"))
    if login is None:
        return None
    if login.expires_at - REFRESH_MARGIN_S > time.time():
        return login.access_token
    if login.refresh_token is None:
        raise TrainyardError(
            f"your sign-in to {master} expired; run `trainyard login --master {master}`"
        )
    response = httpx.post(
        login.token_endpoint,
        data={
            "grant_type": "refresh_token",
            "refresh_token": login.refresh_token,
            "client_id": login.client_id,
        },
        timeout=30,
    )
    if not response.is_success:
        raise TrainyardError(
            f"your sign-in to {master} expired and could not be renewed (the provider "
            f"answered {response.status_code}); run `trainyard login --master {master}`"
        )
    renewed = stored_login(login.master, login.token_endpoint, login.client_id, response.json())
    save_login(path, renewed)
    return renewed.access_token


def stored_login(
    master: str, token_endpoint: str, client_id: str, tokens: dict[str, Any]
) -> StoredLogin:
    return StoredLogin(
        master=master,
        token_endpoint=token_endpoint,
        client_id=client_id,
        access_token=tokens["access_token"],
        refresh_token=tokens.get("refresh_token"),
        expires_at=time.time() + float(tokens.get("expires_in", 300)),
    )

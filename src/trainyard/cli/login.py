"""`trainyard login`: sign in to a shared Master with the OAuth 2.0 device authorization grant.

A command line has no browser to redirect to, so it asks the provider for a user code, the
user enters it on the provider's page (on any device), and the command polls the provider's
token endpoint until the sign-in is done (RFC 8628; Keycloak and CILogon both offer it). The
tokens are kept per Master in a file only the user can read (0600) under their config folder,
and the access token is renewed with the refresh token when it is about to expire.

Which token a command sends (`bearer_for`): TRAINYARD_TOKEN when set (a personal API token,
for scripts and batch jobs), else the stored sign-in, else none (a Master with `auth: none`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from trainyard.auth.schemas import AuthInfo
from trainyard.cli.master_http import MasterHttp
from trainyard.errors import TrainyardError

TOKEN_ENV = "TRAINYARD_TOKEN"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_MARGIN_S = 30.0
"""An access token this close to its expiry is renewed first, so it cannot expire in flight."""
SLOW_DOWN_S = 5.0
"""RFC 8628: a `slow_down` answer adds five seconds to the polling interval."""


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


def device_login(
    master: MasterHttp,
    *,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> StoredLogin:
    """Sign in to `master`'s provider; returns the tokens (the caller stores them).

    Raises:
        TrainyardError: the Master needs no sign-in, the provider offers no device grant, or
            the sign-in was refused or not finished in time.
    """
    info = master.call("GET", "/auth/config", AuthInfo)
    if info.mode == "none" or info.issuer is None or info.client_id is None:
        raise TrainyardError(f"the Master at {master.master} needs no sign-in (auth: none)")
    discovery = _provider_json(f"{info.issuer}/.well-known/openid-configuration")
    device_endpoint = discovery.get("device_authorization_endpoint")
    if not isinstance(device_endpoint, str):
        raise TrainyardError(
            f"the identity provider {info.issuer} offers no device authorization grant (its "
            "discovery document has no device_authorization_endpoint); ask its operators to "
            f"enable it for the client {info.client_id!r}"
        )
    token_endpoint = str(discovery["token_endpoint"])
    start = _provider_json(
        device_endpoint, {"client_id": info.client_id, "scope": info.scope or "openid"}
    )
    where = start.get("verification_uri_complete") or start["verification_uri"]
    say(f"Open {where} and sign in; the code is {start['user_code']}")
    tokens = _poll(token_endpoint, info.client_id, start, sleep)
    return _stored(master.master, token_endpoint, info.client_id, tokens)


def _poll(
    token_endpoint: str, client_id: str, start: dict[str, Any], sleep: Callable[[float], None]
) -> dict[str, Any]:
    interval = float(start.get("interval", 5))
    deadline = time.monotonic() + float(start.get("expires_in", 600))
    form = {
        "grant_type": DEVICE_GRANT,
        "device_code": start["device_code"],
        "client_id": client_id,
    }
    while time.monotonic() < deadline:
        sleep(interval)
        response = httpx.post(token_endpoint, data=form, timeout=30)
        if response.is_success:
            return dict(response.json())
        error = response.json().get("error")
        if error == "slow_down":
            interval += SLOW_DOWN_S
        elif error != "authorization_pending":
            raise TrainyardError(
                f"the sign-in was not completed: the provider answered {error!r}; run "
                "`trainyard login` again"
            )
    raise TrainyardError(
        "the code expired before the sign-in was done; run `trainyard login` again"
    )


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
    renewed = _stored(login.master, login.token_endpoint, login.client_id, response.json())
    save_login(path, renewed)
    return renewed.access_token


def _stored(
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


def _provider_json(url: str, form: dict[str, str] | None = None) -> dict[str, Any]:
    """GET `url`, or POST `form` to it, and read the JSON object it answers."""
    try:
        if form is None:
            response = httpx.get(url, timeout=30)
        else:
            response = httpx.post(url, data=form, timeout=30)
        response.raise_for_status()
        return dict(json.loads(response.content))
    except (httpx.HTTPError, ValueError) as error:
        raise TrainyardError(f"the identity provider did not answer at {url} ({error})") from error

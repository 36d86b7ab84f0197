"""`trainyard login`: sign in to a shared Master with the OAuth 2.0 device authorization grant.

A command line has no browser to redirect to, so it asks the provider for a user code, the
user enters it on the provider's page (on any device), and the command polls the provider's
token endpoint until the sign-in is done (RFC 8628; Keycloak and CILogon both offer it). The
tokens are kept by cli/credentials.py, which every command that talks to a Master reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from trainyard.auth.schemas import AuthInfo
from trainyard.cli.client import MasterClient
from trainyard.cli.credentials import StoredLogin, stored_login
from trainyard.errors import TrainyardError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_S = 5.0
"""RFC 8628: a `slow_down` answer adds five seconds to the polling interval."""


def device_login(
    master: MasterClient,
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
        raise TrainyardError(f"the Master at {master.url} needs no sign-in (auth: none)")
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
    return stored_login(master.url, token_endpoint, info.client_id, tokens)


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

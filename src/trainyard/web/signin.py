"""Who is looking at the dashboard: server-side sessions, and the two ways to start one.

- **The printed link** (`trainyard run`, or a server with `auth: none` on loopback): the link
  carries a dashboard token of its own (never the API's admin token); opening it signs the
  browser in as the local facility admin.
- **The facility's OIDC provider** (a server with `auth: oidc`): the OAuth 2.0 authorization
  code flow with PKCE (RFC 7636, S256), the browser sent to the provider and back to
  `/login/callback`. The access token the provider returns is checked exactly as a bearer
  token of the API is (signature, issuer, audience, expiry: auth/oidc.py) and becomes the
  session's user; the token itself is dropped, so nothing the browser holds can call the API.

Sessions live in memory on the server (a restart signs everyone out), each bound to a user,
with a lifetime, and carry a CSRF token for the forms. The cookie is HttpOnly, Secure behind
TLS, and SameSite: Strict for the printed link, Lax after the provider (a Strict cookie set at
the end of a redirect chain that began on the provider's site would not come back on the next
page). Roles are looked up on every request, so a role taken away applies at once.

The code flow is a few HTTP calls written with httpx, as `trainyard login`'s device grant is:
the PKCE pair, one redirect and one token request; the token checks are the API's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx

from trainyard.auth.principal import UserPrincipal
from trainyard.config.auth import OidcSpec

SESSION_LIFETIME_S = 12 * 3600.0
"""A working day: then the dashboard asks to sign in again."""
SIGN_IN_WINDOW_S = 600.0
"""How long a started sign-in may take at the provider."""
MAX_PENDING_SIGN_INS = 10_000
"""Bounds the memory an anonymous caller can make the server spend on started sign-ins."""
HTTP_TIMEOUT_S = 10.0
DISCOVERY_PATH = "/.well-known/openid-configuration"


class SignInRefused(Exception):
    """A sign-in that cannot finish; the message says why, for the sign-in page."""


@dataclass(frozen=True)
class WebSession:
    """A signed-in browser."""

    id: str
    user: UserPrincipal
    expires_at: float


class DashboardSessions:
    """The dashboard's sessions, in memory; thread-safe."""

    def __init__(self, login_token: str | None) -> None:
        """`login_token`: the printed link's token; None when only the provider signs in."""
        self.login_token = login_token
        self._secret = secrets.token_bytes(32)
        self._sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()

    def link_matches(self, token: str) -> bool:
        """Whether `token` is the printed link's token (compared in constant time)."""
        return self.login_token is not None and secrets.compare_digest(
            token.encode(), self.login_token.encode()
        )

    def open(self, user: UserPrincipal) -> WebSession:
        session = WebSession(
            id=secrets.token_urlsafe(32),
            user=user,
            expires_at=time.time() + SESSION_LIFETIME_S,
        )
        with self._lock:
            now = time.time()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
            self._sessions[session.id] = session
        return session

    def find(self, session_id: str | None) -> WebSession | None:
        """The live session of a cookie's value, else None."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or session.expires_at <= time.time():
            return None
        return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def csrf_token(self, session_id: str) -> str:
        """Bound to the session: a form from another site cannot know it."""
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Pending:
    verifier: str
    redirect_uri: str
    started_at: float


class OidcSignIn:
    """The authorization code flow with PKCE against the Master's provider."""

    def __init__(self, spec: OidcSpec, *, http: httpx.Client | None = None) -> None:
        self.spec = spec
        self._http = http or httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._endpoints: tuple[str, str] | None = None

    @property
    def client_id(self) -> str:
        return self.spec.dashboard_client_id or self.spec.login_client_id

    def start(self, redirect_uri: str) -> tuple[str, str]:
        """(the provider's authorization URL to send the browser to, the state to bind to
        the browser's cookie).

        Raises:
            SignInRefused: the provider cannot be reached, or too many sign-ins are open.
        """
        authorize, _ = self._provider_endpoints()
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 allows 43 to 128
        with self._lock:
            self._forget_stale()
            if len(self._pending) >= MAX_PENDING_SIGN_INS:
                raise SignInRefused("too many sign-ins are under way; try again in a minute")
            self._pending[state] = _Pending(verifier, redirect_uri, time.time())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.spec.dashboard_scope,
                "state": state,
                "code_challenge": _s256(verifier),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in authorize else "?"
        return f"{authorize}{separator}{query}", state

    def finish(self, *, state: str, cookie_state: str | None, code: str) -> str:
        """The provider's access token for `code`, once `state` is the one this browser
        started (its cookie) and is still open; each state works once.

        Raises:
            SignInRefused: an unknown, reused, expired or foreign state, or the provider
                refused the code.
        """
        if not cookie_state or not secrets.compare_digest(state.encode(), cookie_state.encode()):
            raise SignInRefused(
                "this sign-in was not started in this browser (its state does not match); "
                "start again from the sign-in page"
            )
        with self._lock:
            self._forget_stale()
            pending = self._pending.pop(state, None)
        if pending is None:
            raise SignInRefused(
                "this sign-in expired or was already used; start again from the sign-in page"
            )
        _, token_endpoint = self._provider_endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": pending.verifier,
        }
        try:
            response = self._http.post(token_endpoint, data=form)
        except httpx.HTTPError as error:
            raise SignInRefused(f"the identity provider did not answer ({error})") from error
        answer = _json_object(response)
        token = answer.get("access_token")
        if not response.is_success or not isinstance(token, str):
            reason = answer.get("error", response.status_code)
            raise SignInRefused(
                f"the identity provider refused the sign-in ({reason}); start again from the "
                "sign-in page"
            )
        return token

    def _forget_stale(self) -> None:
        oldest = time.time() - SIGN_IN_WINDOW_S
        for state in [s for s, p in self._pending.items() if p.started_at < oldest]:
            del self._pending[state]

    def _provider_endpoints(self) -> tuple[str, str]:
        """(authorization endpoint, token endpoint) from the discovery document, once."""
        if self._endpoints is None:
            url = self.spec.issuer + DISCOVERY_PATH
            try:
                response = self._http.get(url)
                response.raise_for_status()
                document = _json_object(response)
                self._endpoints = (
                    str(document["authorization_endpoint"]),
                    str(document["token_endpoint"]),
                )
            except (httpx.HTTPError, KeyError) as error:
                raise SignInRefused(
                    f"the identity provider {self.spec.issuer} cannot be reached or offers no "
                    f"authorization code sign-in ({error}); tell the facility's operators"
                ) from error
        return self._endpoints


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _json_object(response: httpx.Response) -> dict[str, object]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def write_link_file(path: Path, link: str) -> None:
    """The printed link in a file only its user can read (mode 0600, also when it existed),
    for a Master whose output goes to a log: the link's token must never land in one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(link + "\n")
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT

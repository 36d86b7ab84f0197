"""The `auth` section of the server file: who may call a shared Master, and how they prove it.

A facility Master trusts one OpenID Connect provider (Keycloak, CILogon, ...): people sign in
there, and the Master checks the bearer JWTs it issues against the provider's published keys.
Scripts and batch jobs use personal API tokens instead, issued by the Master itself.
`auth: none` is the laptop mode, allowed only on a loopback address (the server refuses it
elsewhere). Users are keyed on the provider's (issuer, subject), never on a name that can change.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from trainyard.config._strict import Strict

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address, IPv6 with or without brackets) is this machine only."""
    return host.strip("[]").lower() in LOOPBACK_HOSTS or host.startswith("127.")


class OidcSpec(Strict):
    """The identity provider whose tokens the Master accepts."""

    issuer: str = Field(min_length=1)
    """The provider's issuer URL, exactly as its tokens' `iss` claim has it
    (e.g. https://keycloak.example.org/realms/cms). Its discovery document,
    <issuer>/.well-known/openid-configuration, names the signing keys and the device endpoint."""
    audience: str = Field(min_length=1)
    """The `aud` a token must carry to be meant for this Master (the client id of the API)."""
    client_id: str | None = None
    """A public client of the provider for `trainyard login` (device authorization grant);
    default: `audience`."""
    login_scope: str = Field(default="openid offline_access", min_length=1)
    """Scopes `trainyard login` asks for; `offline_access` brings a refresh token. Some
    providers let a public client ask only for `openid` (CILogon): then set that, and users
    sign in again when their access token expires."""
    dashboard_client_id: str | None = None
    """The provider's client the dashboard signs in with (authorization code with PKCE, a
    public client whose redirect URI is https://<server>/login/callback); default: the
    `trainyard login` client, where the provider lets one client do both."""
    dashboard_scope: str = Field(default="openid", min_length=1)
    """Scopes the dashboard asks for; its session needs no refresh token."""
    username_claim: str = "preferred_username"
    """The claim shown as the user's name; identity is always (issuer, sub)."""
    leeway_s: int = Field(default=30, ge=0, le=300)
    """Clock skew tolerated when checking `exp`, `nbf` and `iat`."""

    @field_validator("issuer")
    @classmethod
    def _https_issuer(cls, issuer: str) -> str:
        parts = urlsplit(issuer)
        if parts.scheme == "https" or (
            parts.scheme == "http" and is_loopback(parts.hostname or "")
        ):
            return issuer.rstrip("/")
        raise ValueError(
            "the issuer must be an https:// URL (http:// only for a provider on this machine), "
            "for example https://keycloak.example.org/realms/cms"
        )

    @property
    def login_client_id(self) -> str:
        return self.client_id or self.audience


class ApiTokenPolicy(Strict):
    """Personal API tokens (`trainyard token create`): stored hashed, always with an expiry."""

    default_lifetime_days: int = Field(default=30, ge=1, le=3650)
    max_lifetime_days: int = Field(default=365, ge=1, le=3650)


class AuthSpec(Strict):
    """Sign-in with one OIDC provider, plus personal API tokens."""

    oidc: OidcSpec
    api_tokens: ApiTokenPolicy = ApiTokenPolicy()
    facility_admins: tuple[str, ...] = ()
    """Subjects (`sub` claims of the provider's tokens) who manage projects, shares and quotas."""


AuthConfig = Literal["none"] | AuthSpec
"""The server file's `auth:` value: `none` (loopback only) or an `AuthSpec`."""

"""Personal API tokens: long-lived bearer tokens for scripts and batch jobs, issued by the Master.

A token is shown once, when created; the store keeps only its SHA-256 and a short prefix to
tell tokens apart in listings, so a leaked database grants nothing. Every token expires (the
server file's `auth.api_tokens` bounds the lifetime) and can be revoked; an expired or revoked
token is refused with a message that says which, and when.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy.orm import Session

from trainyard.auth.schemas import TokenRequest
from trainyard.config.auth import ApiTokenPolicy
from trainyard.errors import AuthenticationError, ConfigError, NotFoundError
from trainyard.protocol import API_TOKEN_PREFIX
from trainyard.store import ApiToken, User, accounts, utcnow

DISPLAY_PREFIX_CHARS = len(API_TOKEN_PREFIX) + 6
"""`typat_` and six random characters: enough to tell tokens apart, far too few to guess one."""


def token_sha256(token: str) -> str:
    """The form in which the store keeps a credential: a leaked database grants nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, *, user: User, request: TokenRequest, policy: ApiTokenPolicy
) -> tuple[ApiToken, str]:
    """A new token of `user`: its row and the secret, which exists nowhere else afterwards.

    Raises:
        ConfigError: the lifetime is over the server's maximum.
    """
    days = request.lifetime_days or policy.default_lifetime_days
    if days > policy.max_lifetime_days:
        raise ConfigError(
            [
                f"`lifetime_days`: {days} days is over this Master's maximum of "
                f"{policy.max_lifetime_days} (auth.api_tokens.max_lifetime_days); ask for "
                "fewer and create a new token when it expires"
            ],
            source="token request",
        )
    secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = accounts.add_api_token(
        session,
        user_id=user.id,
        name=request.name,
        token_sha256=token_sha256(secret),
        prefix=secret[:DISPLAY_PREFIX_CHARS],
        expires_at=utcnow() + timedelta(days=days),
    )
    return row, secret


def check_token(session: Session, secret: str) -> ApiToken:
    """The live token whose secret this is; its last use is recorded.

    The row is found by the secret's hash, and the hashes are compared again in constant
    time, so neither the lookup nor the comparison tells an attacker how close a guess was.

    Raises:
        AuthenticationError: no such token, or it was revoked or has expired.
    """
    digest = token_sha256(secret)
    token = accounts.find_api_token(session, token_sha256=digest)
    if token is None or not secrets.compare_digest(token.token_sha256, digest):
        raise AuthenticationError(
            f"this API token ({secret[:DISPLAY_PREFIX_CHARS]}...) was never issued by this "
            "Master, or was mistyped; `trainyard token list` shows yours, "
            "`trainyard token create` makes a new one"
        )
    label = f"API token {token.name!r} ({token.prefix}...)"
    if token.revoked_at is not None:
        raise AuthenticationError(
            f"{label} was revoked at {token.revoked_at.isoformat(timespec='seconds')}; "
            "create a new one with `trainyard token create`"
        )
    now = utcnow()
    if token.expires_at <= now:
        raise AuthenticationError(
            f"{label} expired at {token.expires_at.isoformat(timespec='seconds')}; "
            "create a new one with `trainyard token create`"
        )
    token.last_used_at = now
    return token


def revoke_token(session: Session, *, user: User, token_id: int) -> ApiToken:
    """Revoke one of the user's tokens (revoking twice keeps the first time).

    Raises:
        NotFoundError: the user has no token with that id.
    """
    token = accounts.get_api_token(session, user_id=user.id, token_id=token_id)
    if token is None:
        raise NotFoundError(
            f"you have no API token with id {token_id}; `trainyard token list` shows yours"
        )
    token.revoked_at = token.revoked_at or utcnow()
    return token

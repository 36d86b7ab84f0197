"""Tokens for the tests: minted by the test provider, or forged the ways an attacker would."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

AUDIENCE = "trainyard"


def mint(issuer: str, subject: str, **claims: Any) -> str:
    """An access token the provider signs; `claims` as tests/oidc_provider.py takes them
    (aud, iss, exp_in, nbf_in, iat_in, username)."""
    response = httpx.post(f"{issuer}/mint", json={"sub": subject, **claims}, timeout=10)
    response.raise_for_status()
    return str(response.json()["access_token"])


def _claims(issuer: str, subject: str) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "sub": subject, "aud": AUDIENCE, "iat": now, "exp": now + 300}


def forged(issuer: str, subject: str) -> str:
    """Right claims and the provider's key id, signed with another RSA key."""
    key = RSAKey.generate_key(2048, parameters={"kid": "key-1"}, private=True)
    return jwt.encode({"alg": "RS256", "kid": "key-1"}, _claims(issuer, subject), key)


def hs256(issuer: str, subject: str) -> str:
    """Signed with a shared secret, as if the provider's public key were one."""
    key = OctKey.import_key("a" * 32)
    return jwt.encode({"alg": "HS256"}, _claims(issuer, subject), key, algorithms=["HS256"])


def unsigned(issuer: str, subject: str) -> str:
    """`alg: none`, no signature at all (built by hand: joserfc refuses to make one)."""

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(_claims(issuer, subject))}."

"""The Master as an OpenID Connect resource server: it checks the provider's bearer JWTs.

The provider's signing keys come from its discovery document
(`<issuer>/.well-known/openid-configuration` -> `jwks_uri`). They are fetched on first use
and kept; a token signed with a key id the Master has not seen makes it fetch them again
(providers rotate keys), at most once per `REFETCH_INTERVAL_S`, so a stream of tokens with
made-up key ids cannot turn the Master into a load generator against the provider.

Only asymmetric algorithms are accepted: with HS256 anyone holding the (public) key could sign,
and `none` is no signature at all. Each failure says which check failed, because "invalid
token" leaves a user with a wrong audience or a skewed clock nothing to go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict

from trainyard.config.auth import OidcSpec
from trainyard.errors import AuthenticationError, ServiceUnavailableError

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
REFETCH_INTERVAL_S = 30.0
HTTP_TIMEOUT_S = 5.0
DISCOVERY_PATH = "/.well-known/openid-configuration"


class VerifiedClaims(BaseModel):
    """What the Master takes from a token whose signature and claims were checked."""

    model_config = ConfigDict(frozen=True)

    issuer: str
    subject: str
    username: str | None
    email: str | None


class OidcVerifier:
    """Checks bearer JWTs of one provider; thread-safe, one per Master."""

    def __init__(
        self,
        spec: OidcSpec,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._http = http or httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = -REFETCH_INTERVAL_S

    def verify(self, token: str) -> VerifiedClaims:
        """The token's identity, once its signature, `iss`, `aud`, `exp`, `nbf`, `iat` hold.

        Raises:
            AuthenticationError: the token is malformed, signed otherwise or for someone else,
                expired or not yet valid; the message says which.
            ServiceUnavailableError: the provider's keys could not be fetched.
        """
        header = _header(token)
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise AuthenticationError(
                f"the token is signed with {str(algorithm)[:16]!r}; this Master accepts only "
                f"the provider's asymmetric signatures ({', '.join(ASYMMETRIC_ALGORITHMS)})"
            )
        claims = self._decode(token, algorithm, header.get("kid"))
        self._check_claims(claims)
        username = claims.get(self.spec.username_claim)
        email = claims.get("email")
        return VerifiedClaims(
            issuer=claims["iss"],
            subject=claims["sub"],
            username=username if isinstance(username, str) else None,
            email=email if isinstance(email, str) else None,
        )

    def _decode(self, token: str, algorithm: str, kid: object) -> dict[str, Any]:
        keys = self._key_set(refresh=False)
        if isinstance(kid, str) and not _has_kid(keys, kid):
            keys = self._key_set(refresh=True)
        try:
            return dict(jwt.decode(token, keys, algorithms=[algorithm]).claims)
        except (BadSignatureError, InvalidKeyIdError) as error:
            raise AuthenticationError(
                "the token's signature does not match the provider's keys "
                f"(issuer {self.spec.issuer}): it was not issued by that provider, or was "
                "changed after it was; sign in again (`trainyard login`)"
            ) from error
        except (JoseError, ValueError) as error:
            raise AuthenticationError(f"the token cannot be read as a JWT ({error})") from error

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        """`iss`, `aud`, `sub`, then the times, each with its own message."""
        issuer = claims.get("iss")
        if issuer != self.spec.issuer:
            raise AuthenticationError(
                f"the token's issuer {issuer!r} is not {self.spec.issuer!r}, the provider this "
                "Master trusts; sign in with that provider"
            )
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.spec.audience not in audiences:
            raise AuthenticationError(
                f"the token's audience {audience!r} is not {self.spec.audience!r}: it was "
                "issued for another service; ask the provider for a token for this Master"
            )
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationError("the token has no subject (`sub`), so it names nobody")
        self._check_times(claims)

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        leeway = self.spec.leeway_s
        expires = claims.get("exp")
        if not isinstance(expires, int | float):
            raise AuthenticationError("the token has no expiry (`exp`); the Master needs one")
        if now > expires + leeway:
            raise AuthenticationError(
                f"the token expired at {_iso(expires)} (now {_iso(now)}); sign in again "
                "(`trainyard login`) or use a fresh token"
            )
        not_before = claims.get("nbf")
        if isinstance(not_before, int | float) and now + leeway < not_before:
            raise AuthenticationError(
                f"the token is not valid before {_iso(not_before)} (now {_iso(now)}); "
                "check this machine's clock"
            )
        issued = claims.get("iat")
        if isinstance(issued, int | float) and now + leeway < issued:
            raise AuthenticationError(
                f"the token was issued in the future, at {_iso(issued)} (now {_iso(now)}); "
                "check the clocks of this machine and the provider"
            )

    def _key_set(self, *, refresh: bool) -> KeySet:
        with self._lock:
            stale = self._clock() - self._fetched_at >= REFETCH_INTERVAL_S
            if self._keys is None or (refresh and stale):
                self._keys = self._fetch_keys()
                self._fetched_at = self._clock()
            return self._keys

    def _fetch_keys(self) -> KeySet:
        issuer = self.spec.issuer
        try:
            discovery = self._get_json(issuer + DISCOVERY_PATH)
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError(
                    f"its discovery document {issuer + DISCOVERY_PATH} has no jwks_uri"
                )
            return KeySet.import_key_set(self._get_json(jwks_uri))  # type: ignore[arg-type]
        except (httpx.HTTPError, ValueError, JoseError) as error:
            raise ServiceUnavailableError(
                f"the identity provider {issuer} cannot be reached for its signing keys "
                f"({error}); try again shortly, or tell the facility's operators"
            ) from error

    def _get_json(self, url: str) -> dict[str, Any]:
        response = self._http.get(url)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not answer with a JSON object")
        return document


def _header(token: str) -> dict[str, Any]:
    try:
        return dict(jws.extract_compact(token.encode()).protected)
    except (JoseError, ValueError) as error:
        raise AuthenticationError(
            f"the bearer token is neither a trainyard token nor a JWT ({error}); send the "
            "access token from `trainyard login` or a personal API token"
        ) from error


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")

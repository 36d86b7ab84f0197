"""The resource server's checks against a real provider process: each failure has its message."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.auth.tokens import AUDIENCE, forged, hs256, mint, unsigned
from tests.oidc_provider import provider_process
from trainyard.auth import OidcVerifier
from trainyard.auth.oidc import REFETCH_INTERVAL_S
from trainyard.config.auth import OidcSpec
from trainyard.errors import AuthenticationError, ServiceUnavailableError


@pytest.fixture(scope="module")
def verifier(oidc_issuer: str) -> OidcVerifier:
    return OidcVerifier(OidcSpec(issuer=oidc_issuer, audience=AUDIENCE, leeway_s=5))


def test_a_token_of_the_provider_names_its_user(verifier: OidcVerifier, oidc_issuer: str) -> None:
    claims = verifier.verify(mint(oidc_issuer, "sub-alice", username="alice"))
    assert (claims.issuer, claims.subject, claims.username) == (oidc_issuer, "sub-alice", "alice")


def test_an_audience_list_that_names_the_master_is_accepted(
    verifier: OidcVerifier, oidc_issuer: str
) -> None:
    token = mint(oidc_issuer, "sub-alice", aud=["account", AUDIENCE])
    assert verifier.verify(token).subject == "sub-alice"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp_in": -3600}, "the token expired at "),
        ({"aud": "grafana"}, "the token's audience 'grafana' is not 'trainyard'"),
        (
            {"iss": "https://evil.example"},
            "the token's issuer 'https://evil.example' is not 'http",
        ),
        ({"nbf_in": 3600}, "the token is not valid before "),
        ({"iat_in": 3600}, "the token was issued in the future"),
    ],
)
def test_claims_that_do_not_hold_are_refused_by_name(
    verifier: OidcVerifier, oidc_issuer: str, claims: dict[str, object], message: str
) -> None:
    with pytest.raises(AuthenticationError, match=message):
        verifier.verify(mint(oidc_issuer, "sub-alice", **claims))


def test_the_leeway_absorbs_small_clock_skew(verifier: OidcVerifier, oidc_issuer: str) -> None:
    assert verifier.verify(mint(oidc_issuer, "sub-alice", exp_in=-2, nbf_in=2)).subject


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (forged, "the token's signature does not match the provider's keys"),
        (hs256, "the token is signed with 'HS256'; this Master accepts only"),
        (unsigned, "the token is signed with 'none'; this Master accepts only"),
    ],
)
def test_tokens_not_signed_by_the_provider_are_refused(
    verifier: OidcVerifier, oidc_issuer: str, make: object, message: str
) -> None:
    assert callable(make)
    with pytest.raises(AuthenticationError, match=message):
        verifier.verify(make(oidc_issuer, "sub-alice"))


def test_garbage_is_not_a_jwt(verifier: OidcVerifier) -> None:
    with pytest.raises(AuthenticationError, match="neither a trainyard token nor a JWT"):
        verifier.verify("not-a-token")


def test_rotated_keys_are_fetched_again_but_not_more_often_than_allowed() -> None:
    """A new key id makes the verifier fetch the keys again, once per interval. A provider
    of its own, so the session's keeps its key."""
    with provider_process() as issuer:
        _check_rotation(issuer)


def _check_rotation(oidc_issuer: str) -> None:
    offset = [0.0]
    verifier = OidcVerifier(
        OidcSpec(issuer=oidc_issuer, audience=AUDIENCE), clock=lambda: time.time() + offset[0]
    )
    assert verifier.verify(mint(oidc_issuer, "sub-alice")).subject == "sub-alice"
    httpx.post(f"{oidc_issuer}/rotate", timeout=10).raise_for_status()
    rotated = mint(oidc_issuer, "sub-alice", exp_in=3600)
    with pytest.raises(AuthenticationError, match="signature does not match"):
        verifier.verify(rotated)  # fetched moments ago: not yet again
    offset[0] = REFETCH_INTERVAL_S + 1
    assert verifier.verify(rotated).subject == "sub-alice"


def test_an_unreachable_provider_is_503_naming_the_issuer() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{closed.getsockname()[1]}"
    verifier = OidcVerifier(OidcSpec(issuer=issuer, audience=AUDIENCE))
    with pytest.raises(ServiceUnavailableError, match=f"the identity provider {issuer} cannot"):
        verifier.verify(forged(issuer, "sub-alice"))

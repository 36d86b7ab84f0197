"""The server file's `auth` section: OIDC provider settings and the loopback rule's helper."""

import pytest
from pydantic import TypeAdapter, ValidationError

from trainyard.config.auth import AuthConfig, AuthSpec, is_loopback

ADAPTER = TypeAdapter(AuthConfig)


def test_none_and_oidc_parse() -> None:
    assert ADAPTER.validate_python("none") == "none"
    spec = ADAPTER.validate_python(
        {"oidc": {"issuer": "https://idp.example.org/realms/cms/", "audience": "trainyard"}}
    )
    assert isinstance(spec, AuthSpec)
    assert spec.oidc.issuer == "https://idp.example.org/realms/cms"
    assert spec.oidc.login_client_id == "trainyard"
    assert spec.api_tokens.max_lifetime_days == 365


def test_plain_http_issuer_is_refused_unless_on_this_machine() -> None:
    with pytest.raises(ValidationError, match="must be an https:// URL"):
        AuthSpec.model_validate({"oidc": {"issuer": "http://idp.example.org", "audience": "a"}})
    local = AuthSpec.model_validate({"oidc": {"issuer": "http://127.0.0.1:8080", "audience": "a"}})
    assert local.oidc.issuer == "http://127.0.0.1:8080"


def test_misspelt_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="audiance"):
        AuthSpec.model_validate({"oidc": {"issuer": "https://i", "audiance": "a"}})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("localhost", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("::", False),
        ("master.example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback

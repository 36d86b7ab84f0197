"""A small but real OpenID Connect provider for the tests, run as its own process on 127.0.0.1.

The Master must be tested against a provider it reaches over HTTP, with keys it has to fetch,
never by patching its checks. This one serves what a resource server uses of Keycloak or
CILogon: the discovery document and the JWKS, RS256 access tokens signed with its own key
(generated at start, never written anywhere), and key rotation. Tokens come from `POST /mint`
with the claims a test wants (a test-only stand-in for a login): subject, audience, lifetime,
not-before, issuer.

It also runs the OAuth 2.0 device authorization grant as `trainyard login` uses it (RFC 8628:
`/device`, then polling `/token`) and the refresh-token grant. `POST /device/approve` plays the
user who opens the verification page and signs in: it approves every pending request for a
subject.

Run: `python -m tests.oidc_provider`; it prints its issuer URL as the first line of stdout.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class Provider:
    """Keys and token minting; the newest key signs."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._lock = threading.Lock()
        self._keys: list[RSAKey] = []
        self._devices: dict[str, str | None] = {}
        """device_code -> the subject who approved it (None: pending)."""
        self._refresh: dict[str, str] = {}
        """refresh token -> subject."""
        self.rotate()

    def start_device(self) -> dict[str, Any]:
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._devices[code] = None
        user_code = secrets.token_hex(4).upper()
        return {
            "device_code": code,
            "user_code": user_code,
            "verification_uri": self.issuer + "/device/verify",
            "verification_uri_complete": f"{self.issuer}/device/verify?user_code={user_code}",
            "expires_in": 300,
            "interval": 1,
        }

    def approve_all(self, subject: str) -> int:
        with self._lock:
            pending = [code for code, sub in self._devices.items() if sub is None]
            for code in pending:
                self._devices[code] = subject
            return len(pending)

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint: device-code and refresh-token grants."""
        grant = form.get("grant_type")
        with self._lock:
            if grant == DEVICE_GRANT:
                if form.get("device_code") not in self._devices:
                    return 400, {"error": "expired_token"}
                subject = self._devices[form["device_code"]]
                if subject is None:
                    return 400, {"error": "authorization_pending"}
                del self._devices[form["device_code"]]
            elif grant == "refresh_token" and form.get("refresh_token") in self._refresh:
                subject = self._refresh.pop(form["refresh_token"])
            else:
                return 400, {"error": "invalid_grant"}
            refresh = secrets.token_urlsafe(16)
            self._refresh[refresh] = subject
        access = self.mint({"sub": subject, "exp_in": int(form.get("exp_in", 300))})
        return 200, {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": 300,
        }

    def rotate(self) -> str:
        with self._lock:
            kid = f"key-{len(self._keys) + 1}"
            key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"}, private=True)
            self._keys.insert(0, key)
            return kid

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return KeySet(list(self._keys)).as_dict(private=False)

    def mint(self, request: dict[str, Any]) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": request.get("iss", self.issuer),
            "sub": request["sub"],
            "aud": request.get("aud", "trainyard"),
            "iat": now + int(request.get("iat_in", 0)),
            "exp": now + int(request.get("exp_in", 300)),
            "preferred_username": request.get("username", request["sub"]),
            "jti": secrets.token_hex(8),
        }
        if "nbf_in" in request:
            claims["nbf"] = now + int(request["nbf_in"])
        with self._lock:
            key = self._keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


class Handler(BaseHTTPRequestHandler):
    provider: Provider

    def do_GET(self) -> None:
        if self.path == "/.well-known/openid-configuration":
            self._json(
                {
                    "issuer": self.provider.issuer,
                    "jwks_uri": self.provider.issuer + "/jwks",
                    "token_endpoint": self.provider.issuer + "/token",
                    "device_authorization_endpoint": self.provider.issuer + "/device",
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )
        elif self.path == "/jwks":
            self._json(self.provider.jwks())
        else:
            self._json({"error": "not_found"}, status=404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
        else:
            body = json.loads(raw or b"{}")
        if self.path == "/mint":
            self._json({"access_token": self.provider.mint(body), "token_type": "Bearer"})
        elif self.path == "/rotate":
            self._json({"kid": self.provider.rotate()})
        elif self.path == "/device":
            self._json(self.provider.start_device())
        elif self.path == "/device/approve":
            self._json({"approved": self.provider.approve_all(body["sub"])})
        elif self.path == "/token":
            status, answer = self.provider.token(body)
            self._json(answer, status=status)
        else:
            self._json({"error": "not_found"}, status=404)

    def _json(self, document: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read only the first line of stdout."""


@contextmanager
def provider_process() -> Iterator[str]:
    """Run a provider as a child process; yields its issuer URL, stops it by its PID."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.oidc_provider"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert process.stdout is not None
        issuer = process.stdout.readline().strip()
        assert issuer.startswith("http://127.0.0.1:"), f"the provider did not start: {issuer!r}"
        yield issuer
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    Handler.provider = Provider(issuer)
    print(issuer, flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()

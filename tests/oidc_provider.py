"""A small but real OpenID Connect provider for the tests, run as its own process on 127.0.0.1.

The Master must be tested against a provider it reaches over HTTP, with keys it has to fetch,
never by patching its checks. This one serves what a resource server uses of Keycloak or
CILogon: the discovery document and the JWKS, RS256 access tokens signed with its own key
(generated at start, never written anywhere), and key rotation. Tokens come from `POST /mint`
with the claims a test wants (a test-only stand-in for a login): subject, audience, lifetime,
not-before, issuer.

Run: `python -m tests.oidc_provider`; it prints its issuer URL as the first line of stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


class Provider:
    """Keys and token minting; the newest key signs."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._lock = threading.Lock()
        self._keys: list[RSAKey] = []
        self.rotate()

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
                    "token_endpoint": self.provider.issuer + "/mint",
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )
        elif self.path == "/jwks":
            self._json(self.provider.jwks())
        else:
            self._json({"error": "not_found"}, status=404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/mint":
            self._json({"access_token": self.provider.mint(body), "token_type": "Bearer"})
        elif self.path == "/rotate":
            self._json({"kid": self.provider.rotate()})
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

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

And the authorization code grant with PKCE as the dashboard uses it (RFC 6749 4.1, RFC 7636):
`GET /authorize` signs in the subject a test chose with `POST /authorize/as {"sub": ...}` and
redirects back with a one-time code; `/token` gives tokens for the code only with the verifier
whose S256 is the challenge, the same client and the same redirect URI.

Run: `python -m tests.oidc_provider`; it prints its issuer URL as the first line of stdout.
"""

from __future__ import annotations

import base64
import hashlib
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
from urllib.parse import parse_qs, urlencode, urlsplit

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
        self.signs_in_as: str | None = None
        """Who `/authorize` signs in (a test's choice); None refuses with access_denied."""
        self._codes: dict[str, dict[str, str]] = {}
        """authorization code -> subject, client_id, redirect_uri, code_challenge."""
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

    def authorize(self, query: dict[str, str]) -> str:
        """Where the browser goes next: back to the client with a code (or an error)."""
        back = query["redirect_uri"]
        answer = {"state": query.get("state", "")}
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            answer["error"] = "invalid_request"
        elif self.signs_in_as is None:
            answer["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(16)
            with self._lock:
                self._codes[code] = {
                    "sub": self.signs_in_as,
                    "client_id": query.get("client_id", ""),
                    "redirect_uri": back,
                    "challenge": query.get("code_challenge", ""),
                }
            answer["code"] = code
        return f"{back}{'&' if urlsplit(back).query else '?'}{urlencode(answer)}"

    def _redeem(self, form: dict[str, str]) -> str | None:
        """The subject of an authorization code, once; None when anything does not match."""
        issued = self._codes.pop(form.get("code", ""), None)
        if issued is None:
            return None
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        same = (
            issued["client_id"] == form.get("client_id")
            and issued["redirect_uri"] == form.get("redirect_uri")
            and secrets.compare_digest(issued["challenge"], challenge)
        )
        return issued["sub"] if same else None

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint: device-code, authorization-code and refresh-token grants."""
        grant = form.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                subject = self._redeem(form)
                if subject is None:
                    return 400, {"error": "invalid_grant"}
            elif grant == DEVICE_GRANT:
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
                    "authorization_endpoint": self.provider.issuer + "/authorize",
                    "device_authorization_endpoint": self.provider.issuer + "/device",
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )
        elif self.path == "/jwks":
            self._json(self.provider.jwks())
        elif self.path.startswith("/authorize?"):
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            self.send_response(302)
            self.send_header("location", self.provider.authorize(query))
            self.send_header("content-length", "0")
            self.end_headers()
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
        elif self.path == "/authorize/as":
            self.provider.signs_in_as = body.get("sub")
            self._json({"signs_in_as": self.provider.signs_in_as})
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

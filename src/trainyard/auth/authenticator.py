"""Turn a request's bearer token into a `Principal`: worker credential, API token or JWT.

The kind of token is told by its prefix: `tyw_` a worker credential (master/reports checks it
on the worker endpoints), `typat_` a personal API token, anything else a JWT of the configured
OIDC provider. Two local modes need no provider: `auth: none` (a server on loopback) treats
every caller as the local facility admin, and the embedded `trainyard run` keeps its per-run
admin token, which maps to the same local facility admin.
"""

from __future__ import annotations

import secrets

from trainyard.auth.api_tokens import check_token, token_sha256
from trainyard.auth.oidc import OidcVerifier
from trainyard.auth.principal import Principal, UserPrincipal, WorkerPrincipal
from trainyard.config.auth import AuthConfig, AuthSpec
from trainyard.errors import AuthenticationError
from trainyard.protocol import API_TOKEN_PREFIX, WORKER_TOKEN_PREFIX
from trainyard.store import Store, User, accounts, repository

LOCAL_ISSUER = "trainyard:local"
"""The issuer of the local user, which no OIDC provider can have (it is not a URL)."""
LOCAL_SUBJECT = "local-admin"
MISSING_TOKEN = (
    "missing `Authorization: Bearer <token>` header; sign in with `trainyard login` or use a "
    "personal API token (embedded: the CLI's admin token is TRAINYARD_TOKEN); a worker's "
    "credential comes from its executor"
)


class Authenticator:
    """One per Master: resolves bearer tokens against its store and its provider."""

    def __init__(
        self,
        store: Store,
        auth: AuthConfig,
        *,
        local_token: str | None = None,
        verifier: OidcVerifier | None = None,
    ) -> None:
        """
        Args:
            store: the Master's store (users, tokens, worker credentials).
            auth: the server file's `auth` section.
            local_token: the embedded Master's per-run admin token; with it, `auth: none`
                still needs a token (this one), as `trainyard run` always has.
            verifier: the OIDC verifier (built from `auth` when not given).
        """
        self._store = store
        self.auth = auth
        self._local_token = local_token
        self._verifier = verifier
        self._local: UserPrincipal | None = None
        if isinstance(auth, AuthSpec) and verifier is None:
            self._verifier = OidcVerifier(auth.oidc)

    @property
    def needs_token(self) -> bool:
        """Whether a request without a bearer token is refused."""
        return isinstance(self.auth, AuthSpec) or self._local_token is not None

    def resolve(self, token: str | None) -> Principal:
        """The caller of a request carrying `token` (None: no Authorization header).

        Raises:
            AuthenticationError: the token is unknown, expired, revoked, forged or missing.
            ServiceUnavailableError: the provider's keys could not be fetched.
        """
        if token is None:
            if self.needs_token:
                raise AuthenticationError(MISSING_TOKEN)
            return self.local_admin()
        if token.startswith(WORKER_TOKEN_PREFIX):
            return self._worker(token)
        if self._local_token is not None and secrets.compare_digest(
            token.encode(), self._local_token.encode()
        ):
            return self.local_admin()
        if token.startswith(API_TOKEN_PREFIX):
            with self._store.session() as session:
                return self._principal(session.get_one(User, check_token(session, token).user_id))
        if self._verifier is None:
            if self._local_token is None:
                return self.local_admin()
            raise AuthenticationError(
                "wrong bearer token: this Master's admin token is TRAINYARD_TOKEN"
            )
        claims = self._verifier.verify(token)
        with self._store.session() as session:
            user = accounts.sign_in_user(
                session,
                issuer=claims.issuer,
                subject=claims.subject,
                username=claims.username,
                email=claims.email,
            )
            return self._principal(user)

    def _worker(self, token: str) -> WorkerPrincipal:
        with self._store.session() as session:
            credential = repository.find_worker_credential(
                session, token_sha256=token_sha256(token)
            )
            if credential is None:
                raise AuthenticationError(
                    "this worker credential was never issued by this Master (a worker of "
                    "another Master, or a mistyped token)"
                )
            return WorkerPrincipal(trial_id=credential.trial_id, attempt=credential.attempt)

    def local_admin(self) -> UserPrincipal:
        """The local user, created once; kept so local requests write nothing."""
        if self._local is None:
            with self._store.session() as session:
                user = accounts.sign_in_user(
                    session, issuer=LOCAL_ISSUER, subject=LOCAL_SUBJECT, username="local"
                )
                self._local = self._principal(user)
        return self._local

    def _principal(self, user: User) -> UserPrincipal:
        return UserPrincipal(
            user_id=user.id,
            issuer=user.issuer,
            subject=user.subject,
            username=user.username,
            is_facility_admin=self._is_facility_admin(user),
        )

    def _is_facility_admin(self, user: User) -> bool:
        if user.issuer == LOCAL_ISSUER:
            return self.auth == "none"
        auth = self.auth
        return (
            isinstance(auth, AuthSpec)
            and user.issuer == auth.oidc.issuer
            and user.subject in auth.facility_admins
        )

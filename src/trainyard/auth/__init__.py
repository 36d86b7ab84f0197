"""Sign-in and authorisation for the Master: who is calling (`Authenticator` -> `Principal`) and
what they may do (`Access`: roles in projects). The HTTP layer (master/api) uses this package;
it uses only config, store, errors and protocol."""

from trainyard.auth.access import Access
from trainyard.auth.accounts import Accounts
from trainyard.auth.authenticator import LOCAL_ISSUER, Authenticator
from trainyard.auth.oidc import OidcVerifier, VerifiedClaims
from trainyard.auth.principal import Principal, UserPrincipal, WorkerPrincipal

__all__ = [
    "LOCAL_ISSUER",
    "Access",
    "Accounts",
    "Authenticator",
    "OidcVerifier",
    "Principal",
    "UserPrincipal",
    "VerifiedClaims",
    "WorkerPrincipal",
]

"""The caller's own account: who they are (`/me`) and their personal API tokens (`/tokens`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from trainyard.auth.schemas import AuthInfo, MeOut, TokenCreated, TokenOut, TokenRequest
from trainyard.config.auth import AuthSpec
from trainyard.master.api.deps import AccountsDep, CurrentUser
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.protocol import MAX_INT

router = APIRouter(tags=["accounts"], responses=ERROR_RESPONSES)

TokenIdPath = Annotated[int, Path(ge=1, le=MAX_INT, description="The token's id.")]


@router.get("/auth/config")
def auth_config(request: Request) -> AuthInfo:
    """How to sign in: the provider and its public client (no token needed)."""
    auth = request.app.state.authenticator.auth
    if not isinstance(auth, AuthSpec):
        return AuthInfo(mode="none")
    oidc = auth.oidc
    return AuthInfo(
        mode="oidc",
        issuer=oidc.issuer,
        audience=oidc.audience,
        client_id=oidc.login_client_id,
        scope=oidc.login_scope,
    )


@router.get("/me")
def me(user: CurrentUser, accounts: AccountsDep) -> MeOut:
    """Who the Master takes the caller for, and their role in each of their projects."""
    return accounts.me(user)


@router.get("/tokens")
def list_tokens(user: CurrentUser, accounts: AccountsDep) -> list[TokenOut]:
    """The caller's API tokens (never their secrets), oldest first."""
    return accounts.list_tokens(user)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(request: TokenRequest, user: CurrentUser, accounts: AccountsDep) -> TokenCreated:
    """A new API token; its secret is in this answer and nowhere else."""
    return accounts.create_token(user, request)


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: TokenIdPath, user: CurrentUser, accounts: AccountsDep) -> TokenOut:
    """Revoke one of the caller's tokens; it stops working at once."""
    return accounts.revoke_token(user, token_id)

"""`trainyard login` and `trainyard token create | list | revoke`, against a shared Master.

The API's schemas and the HTTP client are imported inside the commands: `trainyard --help`
and the embedded commands should not pay for the store and the auth package.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from trainyard.cli.output import make_console
from trainyard.errors import TrainyardError

if TYPE_CHECKING:
    from trainyard.auth.schemas import TokenOut
    from trainyard.cli.client import MasterClient

token_app = typer.Typer(
    help="Personal API tokens for scripts and batch jobs.", no_args_is_help=True
)
console = make_console()

MasterOption = Annotated[
    str | None,
    typer.Option("--master", envvar="TRAINYARD_MASTER", help="URL of the shared Master."),
]


def master_client(master: str | None, *, signed_in: bool = True) -> MasterClient:
    """The client of `--master` / TRAINYARD_MASTER, sending the user's credential."""
    from trainyard.cli.client import MasterClient

    if not master:
        raise TrainyardError(
            "no Master to talk to: pass --master URL or set TRAINYARD_MASTER "
            "(e.g. https://trainyard.example.org)"
        )
    return MasterClient.signed_in(master) if signed_in else MasterClient(master, token=None)


def login(master: MasterOption = None) -> None:
    """Sign in to a shared Master's identity provider (device code); tokens are kept 0600."""
    from trainyard.cli.credentials import credentials_file, save_login
    from trainyard.cli.login import device_login

    client = master_client(master, signed_in=False)
    stored = device_login(client, say=lambda line: console.print(escape(line)))
    save_login(credentials_file(), stored)
    console.print(f"signed in to {escape(client.url)}")


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name to recognise the token by.")],
    days: Annotated[
        int | None, typer.Option(help="Lifetime in days (default: the server's).")
    ] = None,
    master: MasterOption = None,
) -> None:
    """Create a token; it is printed once, store it now (e.g. in a secret of your CI)."""
    from trainyard.auth.schemas import TokenCreated, TokenRequest

    request = TokenRequest(name=name, lifetime_days=days)
    created = master_client(master).call("POST", "/tokens", TokenCreated, body=request)
    console.print(created.token, highlight=False, soft_wrap=True)
    console.print(
        f"token {created.info.id} ({escape(created.info.name)}) expires "
        f"{created.info.expires_at:%Y-%m-%d}; it is not shown again. Use it as TRAINYARD_TOKEN.",
        style="dim",
    )


@token_app.command("list")
def list_tokens(master: MasterOption = None) -> None:
    """Your tokens: never their secrets, only the first characters."""
    from trainyard.auth.schemas import TokenOut

    tokens = master_client(master).call("GET", "/tokens", list[TokenOut])
    table = Table("id", "name", "starts with", "expires", "last used", "state")
    for token in tokens:
        table.add_row(
            str(token.id),
            escape(token.name),
            token.prefix,
            f"{token.expires_at:%Y-%m-%d}",
            f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "-",
            _state(token),
        )
    console.print(table)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (`trainyard token list`).")],
    master: MasterOption = None,
) -> None:
    """Revoke a token; it stops working at once."""
    from trainyard.auth.schemas import TokenOut

    token = master_client(master).call("DELETE", f"/tokens/{token_id}", TokenOut)
    console.print(f"revoked token {token.id} ({escape(token.name)})")


def _state(token: TokenOut) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at <= datetime.now(UTC) else "active"

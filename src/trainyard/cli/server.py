"""`trainyard server`: run the facility's shared Master, or migrate its database."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from trainyard.cli.output import make_console
from trainyard.errors import TrainyardError

server_app = typer.Typer(
    help="The facility's shared Master: many users' experiments on one set of pools.",
    invoke_without_command=True,
)
console = make_console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Server file (YAML); see docs/operators/server.md.")
]


@server_app.callback()
def server(ctx: typer.Context, config: ConfigOption = None) -> None:
    """`trainyard server --config FILE` starts the server (as `start` does)."""
    if ctx.invoked_subcommand is None:
        start(config)


@server_app.command()
def start(config: ConfigOption = None) -> None:
    """Serve until SIGTERM or Ctrl-C, which pause every experiment (workers checkpoint);
    the next start continues them."""
    from trainyard.config.server import load_server_config
    from trainyard.master.server_checks import open_checked

    path = _required(config)
    server_config = load_server_config(path)
    checked = open_checked(server_config, path)  # before the Master's imports: refusals are quick
    try:
        from trainyard.master.facility_server import serve
    except BaseException:
        checked.close()
        raise
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(
        server_config,
        checked,
        on_ready=lambda url: console.print(
            f"trainyard server on {escape(url)}, store {escape(server_config.shown_database)}"
        ),
    )


@server_app.command()
def migrate(config: ConfigOption = None) -> None:
    """Bring the server's database to this trainyard's schema (back it up first)."""
    from trainyard.config.server import load_server_config
    from trainyard.master.server_checks import migrate as migrate_database

    server_config = load_server_config(_required(config))
    done = migrate_database(server_config)
    where = escape(server_config.shown_database)
    if done.before == done.after:
        console.print(f"{where} is at revision {done.after}, this trainyard's: nothing to do")
    else:
        console.print(f"migrated {where} from revision {done.before or '(empty)'} to {done.after}")


def _required(config: Path | None) -> Path:
    if config is None:
        raise TrainyardError("give the server file: trainyard server --config server.yaml")
    return config

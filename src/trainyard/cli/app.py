"""The `trainyard` command: run, validate, submit, list, show, logs, export, data, server, login,
token, admin.

`list`, `show`, `logs`, `pause`, `activate` and `kill` read this machine's store (embedded
mode) or, with `--master URL` / TRAINYARD_MASTER, ask a `trainyard server`; both print the
same tables and exit with the same codes.
"""

from __future__ import annotations

import shlex
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from trainyard.cli.admin import admin_app
from trainyard.cli.data import data_app
from trainyard.cli.output import make_console
from trainyard.cli.server import server_app
from trainyard.cli.tokens import login, token_app
from trainyard.errors import TrainyardError
from trainyard.settings import Settings

if TYPE_CHECKING:
    from trainyard.cli.client import MasterClient
    from trainyard.config import ExperimentConfig
    from trainyard.master.service import MasterService

app = typer.Typer(
    name="trainyard",
    help="Train particle-physics models on a laptop, a SLURM cluster or Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(server_app, name="server")
app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")
app.command("login")(login)

console = make_console()
error_console = make_console(stderr=True)


MasterUrl = Annotated[
    str | None,
    typer.Option(
        "--master",
        envvar="TRAINYARD_MASTER",
        help="A trainyard server's URL (token: TRAINYARD_TOKEN); default: this machine's store.",
    ),
]


class ShowFormat(StrEnum):
    """What `trainyard show` writes: a table for people, CSV or JSON for scripts."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


@app.command()
def run(
    file: Annotated[Path | None, typer.Argument(help="Experiment file (YAML).")] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Continue a paused or crashed experiment (id or name)."),
    ] = None,
    facility: Annotated[
        Path | None,
        typer.Option(
            "--facility",
            help="Facility file with the pools (default: TRAINYARD_FACILITY, else this "
            "machine only).",
        ),
    ] = None,
) -> None:
    """Run an experiment on its pool (this machine, or a SLURM cluster) with a live table."""
    from trainyard.executors.pools import start_fork_server_early

    if (file is None) == (resume is None):
        raise TrainyardError("give an experiment file, or --resume EXPERIMENT, but not both")
    settings = Settings()
    if facility is not None:
        settings = settings.model_copy(update={"facility": facility})
    warm = None
    if file is not None and settings.fork_workers:
        warm = start_fork_server_early(file, facility_file=settings.facility)
    try:
        from trainyard.cli.run import run_experiment  # torch and the Master: seconds

        code = run_experiment(
            file=file, resume=resume, settings=settings, console=console, warm_fork_server=warm
        )
    finally:
        if warm is not None:
            warm.close()  # a no-op when the executor took and closed it
    raise typer.Exit(code)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Experiment file (YAML).")]) -> None:
    """Check an experiment file (schema, data paths, model) without running anything."""
    from trainyard.config import load_experiment
    from trainyard.master.preflight import preflight

    config = load_experiment(file)
    preflight(config)
    console.print(
        f"[green]{escape(str(file))} is valid[/green]: experiment {escape(repr(config.name))}, "
        f"{_trains(config)}, "
        f"searcher {config.searcher.name.value!r}"
    )


def _trains(config: ExperimentConfig) -> str:
    """What the experiment trains, for `validate`: a model, or a script's command."""
    if config.entrypoint is not None:
        return f"script {escape(repr(shlex.join(config.entrypoint.command)))}"
    assert config.model is not None, "an experiment has a model or an entrypoint"
    return f"model {escape(repr(config.model.name))}"


@app.command("list")
def list_experiments(
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 20,
    master: MasterUrl = None,
) -> None:
    """List experiments, newest first."""
    from trainyard.cli.display import experiments_table

    console.print(experiments_table(_source(master).list_experiments(limit=limit)))


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="Experiment file (YAML).")],
    master: MasterUrl = None,
    project: Annotated[
        str, typer.Option(help="The project it belongs to; you must be one of its editors.")
    ] = "default",
) -> None:
    """Send an experiment to a trainyard server, which checks and runs it; prints its id."""
    import yaml

    from trainyard.cli.client import MasterClient
    from trainyard.config import load_experiment
    from trainyard.protocol import ExperimentSubmission

    if not master:
        raise TrainyardError(
            "submit sends an experiment to a trainyard server: give --master URL or set "
            f"TRAINYARD_MASTER; to run it on this machine, use `trainyard run {file}`"
        )
    text = yaml.safe_dump(load_experiment(file).model_dump(mode="json"), sort_keys=False)
    submission = ExperimentSubmission(yaml=text, source=str(file), project=project)
    found = MasterClient.signed_in(master).submit(submission)
    error_console.print(f"experiment {found.id} ({escape(found.name)}) is {found.state}")
    sys.stdout.write(f"{found.id}\n")  # alone on stdout, for scripts


@app.command()
def show(
    experiment: Annotated[str, typer.Argument(help="Experiment id or name.")],
    output_format: Annotated[
        ShowFormat,
        typer.Option(
            "--format",
            help="table: for reading; csv or json: one row per trial with every "
            "hyperparameter, the best validation report and the checkpoint, for scripts.",
        ),
    ] = ShowFormat.TABLE,
    master: MasterUrl = None,
) -> None:
    """Show an experiment and its trials."""
    from trainyard.cli.client import MasterClient
    from trainyard.cli.display import trial_errors, trials_detail_table
    from trainyard.cli.trial_records import records_csv, records_json
    from trainyard.master.records import trial_records

    source = _source(master)
    found = source.get_experiment(experiment)
    if isinstance(source, MasterClient):
        records = source.trial_records(str(found.id))
    else:
        records = trial_records(source, found.id)
    if output_format != ShowFormat.TABLE:
        write = records_csv if output_format == ShowFormat.CSV else records_json
        sys.stdout.write(write(records))
        return
    console.print(f"[bold]experiment {found.id}[/bold] {escape(found.name)}: {found.state}")
    if found.message:
        console.print(found.message, markup=False)
    console.print(trials_detail_table(records))
    for line in trial_errors(records):
        console.print(line)


def _control(experiment: str, action: str, master: str | None) -> None:
    found = _source(master).control_experiment(experiment, action)
    console.print(f"experiment {found.id} ({found.name}) is now {found.state}", markup=False)
    if action == "activate" and not master:
        console.print(
            "a `trainyard run` attached to it continues it now; if none is, continue it with "
            f"`trainyard run --resume {found.id}`"
        )


ExperimentRef = Annotated[str, typer.Argument(help="Experiment id or name.")]


@app.command()
def pause(experiment: ExperimentRef, master: MasterUrl = None) -> None:
    """Checkpoint and stop every trial of a running experiment; `activate` continues it."""
    _control(experiment, "pause", master)


@app.command()
def activate(experiment: ExperimentRef, master: MasterUrl = None) -> None:
    """Continue a paused experiment."""
    _control(experiment, "activate", master)


@app.command()
def kill(experiment: ExperimentRef, master: MasterUrl = None) -> None:
    """Stop an experiment for good: its workers are killed, its trials canceled."""
    _control(experiment, "kill", master)


@app.command()
def logs(
    trial: Annotated[int, typer.Argument(help="Trial id (see `trainyard show`).")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    master: MasterUrl = None,
) -> None:
    """Print a trial's worker log."""
    from trainyard.cli.client import MasterClient

    source = _source(master)
    found = source.get_trial(trial)
    if isinstance(source, MasterClient):
        _follow_remote_log(source, found.id, follow=follow, state=found.state)
        return
    if not found.log_path or not Path(found.log_path).exists():
        raise TrainyardError(_no_log_yet(trial, found.state))
    with Path(found.log_path).open(errors="replace") as log:
        sys.stdout.write(log.read())
        while follow:
            line = log.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.5)


@app.command()
def export(
    trial: Annotated[int, typer.Argument(help="Trial id (see `trainyard show`).")],
    onnx: Annotated[
        Path,
        typer.Option(
            "--onnx",
            help="Folder to write model.onnx and preprocess.json into, as weaver-core's "
            "--export-onnx does, for CMSSW.",
        ),
    ],
    checkpoint: Annotated[
        str,
        typer.Option(
            help="latest (the newest), best (of the kept checkpoints validated at their "
            "step, the best by the searcher's metric) or a step number.",
        ),
    ] = "latest",
    # 15 is export.onnx_file.DEFAULT_OPSET, not imported here: it imports torch.
    # 15 is export.onnx_file.DEFAULT_OPSET, not imported here: that module imports torch.
    opset: Annotated[int, typer.Option(help="ONNX opset (weaver-core's default).")] = 15,
) -> None:
    """Export a trial's trained model as ONNX with weaver's input names, for CMSSW."""
    from trainyard.cli.export import export_onnx_files

    export_onnx_files(
        _service(), trial_id=trial, folder=onnx, which=checkpoint, opset=opset, console=console
    )


def _no_log_yet(trial: int, state: str) -> str:
    return f"trial {trial} has no log yet ({state}); it is written when it starts"


def _follow_remote_log(client: MasterClient, trial: int, *, follow: bool, state: str) -> None:
    """`logs` on a server: the log in chunks from the server, then new lines every 0.5 s."""
    chunk = client.read_log(trial, offset=0)
    if not chunk.exists:
        raise TrainyardError(_no_log_yet(trial, state))
    while True:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        if not chunk.text:
            if not follow:
                return
            time.sleep(0.5)
        chunk = client.read_log(trial, offset=chunk.next_offset)


def _source(master: str | None) -> MasterService | MasterClient:
    """Where experiments are read and controlled: a server when `--master` is given, else
    this machine's store. Both answer with the same models."""
    if master:
        from trainyard.cli.client import MasterClient

        return MasterClient.signed_in(master)
    return _service()


def _service() -> MasterService:
    from trainyard.master.service import MasterService
    from trainyard.store import open_store

    settings = Settings()
    return MasterService(open_store(settings.resolved_database_url()), settings)


def main() -> None:
    """Console-script entry: user errors print as one clear message, without a traceback."""
    try:
        app()
    except TrainyardError as err:
        error_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        sys.exit(2)

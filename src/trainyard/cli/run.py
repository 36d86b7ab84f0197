"""`trainyard run`: the embedded Master, the pool's executor and a live table, in one process."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from trainyard.cli.display import trial_table
from trainyard.cli.progress import ProgressReporter
from trainyard.config import ExperimentConfig, load_experiment
from trainyard.config.facility import load_facility
from trainyard.executors.fork_server import ForkServer
from trainyard.executors.pools import executor_for_pool
from trainyard.master.api.app import create_app
from trainyard.master.cache_janitor import StagingCacheJanitor
from trainyard.master.packs import pack_size
from trainyard.master.preflight import preflight
from trainyard.master.runner import ExperimentRunner
from trainyard.master.server import EmbeddedServer, new_token
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState
from trainyard.settings import Settings
from trainyard.store import open_store
from trainyard.web.dashboard import install_dashboard
from trainyard.web.pools import local_pool
from trainyard.web.signin import write_link_file

EXIT_CODES = {
    ExperimentState.COMPLETED: 0,
    ExperimentState.ERRORED: 1,
    ExperimentState.PAUSED: 130,
}


def run_experiment(
    *,
    file: Path | None,
    resume: str | None,
    settings: Settings,
    console: Console,
    warm_fork_server: ForkServer | None = None,
) -> int:
    """Start or resume an experiment and stay with it until it ends or Ctrl-C pauses it.

    The pool's executor is built and checked before the experiment is stored, so a pool
    that cannot run its trials costs nothing to fix. `warm_fork_server`: the worker fork
    server the command started before importing this module, for the executor to use.
    """
    facility = load_facility(settings.facility)
    store = open_store(settings.resolved_database_url())
    service = MasterService(store, settings)
    if resume is not None:
        experiment_id = service.get_experiment(resume).id
        config = service.experiment_config(experiment_id)
    else:
        assert file is not None, "the CLI passes a file or --resume"
        config = load_experiment(file)
    executor = executor_for_pool(
        facility,
        config.resources,
        experiment=config.name,
        fork_workers=settings.fork_workers,
        warm_fork_server=warm_fork_server,
    )
    try:
        preflight(config, pool_capacity=executor.capacity())
        pack_size(config, executor)  # refuses a pack the pool cannot start, before storing
        if resume is None:
            experiment_id = service.create_experiment(config)
        app = create_app(
            service, admin_token=new_token(), max_request_bytes=settings.max_request_bytes
        )
        dashboard_token = new_token()
        install_dashboard(
            app, login_token=dashboard_token, pools=local_pool(config.resources.pool, executor)
        )
        server = EmbeddedServer(
            app, host=settings.master_host, advertised_host=settings.advertised_master_host()
        )
        server.start()
        _announce_dashboard(f"{server.url}/login?token={dashboard_token}", settings, console)
        runner = ExperimentRunner(
            service=service, executor=executor, settings=settings, master_url=server.url
        )
        janitor = StagingCacheJanitor.start_if_limited(settings)
        started = time.monotonic()
        try:
            state = _run_with_progress(runner, service, experiment_id, config, console)
        finally:
            if janitor is not None:
                janitor.stop()
            server.stop()
            service.tracking.close()
            store.close()
    finally:
        executor.close()
    _print_summary(service, experiment_id, config, state, time.monotonic() - started, console)
    return EXIT_CODES.get(state, 1)


def _run_with_progress(
    runner: ExperimentRunner,
    service: MasterService,
    experiment_id: int,
    config: ExperimentConfig,
    console: Console,
) -> ExperimentState:
    """Run while showing progress: a live table in a terminal, else one line per event.

    A live table written to a file or a pipe would appear only once the run ends; a log file
    (`| tee`, a batch job) gets each trial's launch, reports and end as they happen instead.
    """
    notice = Text("Ctrl-C checkpoints every trial and pauses the experiment", style="dim")

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        notice.plain = "pausing: trials are writing checkpoints..."
        runner.request_pause()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        if console.is_terminal:
            return _run_with_live_table(runner, service, experiment_id, config, notice, console)
        reporter = ProgressReporter(
            service, experiment_id, searcher=config.searcher, console=console
        )
        state = runner.run(experiment_id, on_tick=reporter.tick)
        reporter.tick()  # trials paused or canceled after the runner's last tick
        return state
    finally:
        signal.signal(signal.SIGINT, previous)


def _announce_dashboard(link: str, settings: Settings, console: Console) -> None:
    """The sign-in link on a terminal; in a file only the user can read when the output is
    going to a log, so the link's token never lands in one."""
    if console.is_terminal:
        console.print(f"dashboard: {link}", markup=False)
        return
    path = settings.resolved_home() / "dashboard.url"
    write_link_file(path, link)
    console.print(f"dashboard: the sign-in link is in {path} (readable only by you)", markup=False)


def _run_with_live_table(
    runner: ExperimentRunner,
    service: MasterService,
    experiment_id: int,
    config: ExperimentConfig,
    notice: Text,
    console: Console,
) -> ExperimentState:
    title = f"experiment {experiment_id} ({escape(config.name)})"
    metric = config.searcher.metric

    def render() -> Group:
        trials = service.list_trials(experiment_id)
        latest = {t.id: service.latest_metrics(t.id) for t in trials}
        return Group(trial_table(trials, latest, title=title, metric=metric), notice)

    with Live(render(), console=console, refresh_per_second=2, transient=False) as live:
        return runner.run(experiment_id, on_tick=lambda: live.update(render()))


def _print_summary(
    service: MasterService,
    experiment_id: int,
    config: ExperimentConfig,
    state: ExperimentState,
    elapsed_s: float,
    console: Console,
) -> None:
    """The end of a run: each trial's state, best validation, checkpoint, log and error.

    Everything but the headline comes from the store, workers or the experiment file, so it
    is printed as plain text (no markup).
    """
    metric, mode = config.searcher.metric, config.searcher.mode
    console.print(f"\n[bold]experiment {experiment_id} {state}[/bold] after {elapsed_s:.0f} s")
    for trial in service.list_trials(experiment_id):
        best = service.best_validation(trial.id, metric=metric, mode=mode)
        lines = [f"trial {trial.number} (id {trial.id}): {trial.state}"]
        if best is not None:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in best.values.items())
            lines.append(f"  best {metric} at batch {best.batches}: {shown}")
        checkpoint = service.latest_checkpoint_path(trial.id)
        lines.append(f"  checkpoint: {checkpoint or '-'}")
        lines.append(f"  log:        {trial.log_path}")
        for line in lines:
            console.print(line, markup=False)
        if trial.error:
            console.print(Text.assemble(("  error: ", "red"), trial.error))
    if state == "PAUSED":
        console.print(f"resume with: trainyard run --resume {experiment_id}")

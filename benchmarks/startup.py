"""Trial start-up: from a trial's submission to its first training step, over 10 trials.

One `trainyard run` of a random search of 10 short ParticleNet-Lite trials, one at a time
(max_concurrent_trials 1, 2 batches each, a training report after every batch), on toy data:
locally (embedded Master, local executor; its workers forked from the warm fork server, and
again as fresh processes, TRAINYARD_FORK_WORKERS=false) and, with ``--slurm``, through a
throwaway SLURM cluster (deploy/slurm/cluster-up.sh, as the SLURM tests bring it up; needs
root and Debian's slurm-wlm). Per trial, from the store and the trial's log:

    submitted     the trial was created (queued) by the searcher          store: created_at
    launched      the executor started it (local: Popen; SLURM: sbatch)   store: started_at
    worker up     the worker's first log line (Python and its first imports)   log
    data open     the worker fetched its spec and starts opening the data       log
    ready         data open, model built, resumed: the trainer's summary line   log
    first step    the first training report reached the Master            store: reported_at
    turnover      from a trial's outcome (its worker's last log line) to the next trial's
                  launch: the worker's exit plus the runner seeing it (one trial at a time)

The first trial also stages the data (later ones reuse it), so the median is the figure;
the range shows the first trial's staging. The summary gives each phase's median.

    .venv/bin/python -m benchmarks.startup                  # local, ~1-2 minutes
    .venv/bin/python -m benchmarks.startup --slurm          # local and SLURM
    .venv/bin/python -m benchmarks.startup --slurm-only --name startup-slurm
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.results_files import cpu_model, write_results

DEPLOY_SLURM = Path(__file__).parents[1] / "deploy" / "slurm"
PHASES = ("launched", "worker up", "data open", "ready", "first step")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_MARKS = {
    "worker up": re.compile(r" trainyard\.worker"),
    "data open": re.compile(r"(reusing staged|staging) training data"),
    "ready": re.compile(r"trial \d+: .* batches \(\d+/epoch\)"),
    "outcome": re.compile(r" trainyard\.worker: trial \d+ \w+ \(attempt \d+\)"),
}
SLURM_POOL: dict[str, Any] = {
    "executor": "slurm",
    "slurm": {
        "partition": "cpu",
        "tasks_per_node": 2,
        "cpus_per_task": 1,
        "mem_per_task": "1500M",
        "max_nodes": 1,
        "status_interval_s": 0.2,
    },
}


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": _machine(),
        "settings": {
            "trials": args.trials,
            "python": sys.executable,
            "before": str(args.before) if args.before else None,
            "rounds": args.rounds,
        },
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="trainyard-startup-") as tmp:
        workdir = args.workdir or Path(tmp)
        data = _toy_data(workdir)
        if not args.slurm_only:
            results["runs"]["local"] = _run("local", data, workdir / "local", args.trials, None)
            results["runs"]["local, fresh worker processes"] = _run(
                "local, fresh worker processes",
                data,
                workdir / "local-fresh",
                args.trials,
                None,
                extra_env={"TRAINYARD_FORK_WORKERS": "false"},
            )
        if args.slurm or args.slurm_only:
            results["runs"].update(_with_cluster(workdir, data, args))
    write_results(args.out, args.name, results, _markdown(results))
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--slurm", action="store_true", help="also through a SLURM cluster")
    parser.add_argument("--slurm-only", action="store_true", help="only through SLURM")
    parser.add_argument("--name", default="startup", help="results file name, no suffix")
    parser.add_argument(
        "--workdir", type=Path, help="keep data, homes and logs in this new folder"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="also run the SLURM search with the trainyard of this src folder (PYTHONPATH), "
        "alternating with the current code, e.g. `git archive <commit> src | tar -x -C DIR`",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="SLURM searches per variant, alternating"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def _toy_data(workdir: Path) -> Path:
    from trainyard.datasets.toy import write_toy_dataset

    root = workdir / "toy"
    write_toy_dataset(root / "train", num_jets=2048, seed=11)
    write_toy_dataset(root / "val", num_jets=512, seed=12)
    return root


def _experiment(data: Path, trials: int, pool: str) -> dict[str, Any]:
    return {
        "name": "startup",
        "model": {"name": "particlenet-lite", "options": {"k": 4}},
        "data": {
            "train": str(data / "train" / "*.parquet"),
            "val": str(data / "val" / "*.parquet"),
            "max_particles": 16,
        },
        "hyperparameters": {"lr": {"type": "log", "min": 1e-4, "max": 1e-2}, "batch_size": 64},
        "searcher": {"name": "random", "metric": "val_auc", "mode": "max", "max_trials": trials},
        "resources": {"pool": pool, "max_concurrent_trials": 1},
        "training": {
            "max_length": {"batches": 2},
            "validation_period": {"batches": 2},
            "log_period_batches": 1,
            "seed": 3,
        },
        "checkpoint": {"period": {"batches": 2}, "keep": 1},
    }


def _run(
    where: str,
    data: Path,
    home: Path,
    trials: int,
    cluster_env: dict[str, str] | None,
    *,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One `trainyard run` of the search; returns per-trial phase times and their medians."""
    home.mkdir(parents=True)
    pool = "default" if cluster_env is None else "cpu"
    experiment = home / "startup.yaml"
    experiment.write_text(yaml.safe_dump(_experiment(data, trials, pool)))
    command = [sys.executable, "-c", "from trainyard.cli.app import main; main()", "run"]
    command.append(str(experiment))
    env = {**os.environ, "TRAINYARD_HOME": str(home), "TRAINYARD_POLL_INTERVAL_S": "0.05"}
    env.update(extra_env or {})
    if cluster_env is not None:
        facility = home / "facility.yaml"
        pools = {"default": {"executor": "local"}, "cpu": SLURM_POOL}
        facility.write_text(yaml.safe_dump({"pools": pools}))
        command += ["--facility", str(facility)]
        env.update(cluster_env)
    load = os.getloadavg()
    started, cpu_before = time.perf_counter(), _children_cpu_s()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    cpu_s = _children_cpu_s() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"{where}: trainyard run failed:\n{done.stdout}\n{done.stderr}")
    per_trial, turnover = _trial_phases(home)
    first_step = [t["first step"] for t in per_trial]
    return {
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "run_s": round(time.perf_counter() - started, 1),
        # CLI, Master and (locally) every worker: less sensitive to the load than wall time.
        "cpu_s_per_trial": round(cpu_s / trials, 2),
        "submit_to_first_step_s": {
            "median": round(statistics.median(first_step), 2),
            "min": round(min(first_step), 2),
            "max": round(max(first_step), 2),
        },
        "phase_medians_s": {
            phase: round(statistics.median(t[phase] for t in per_trial), 2) for phase in PHASES
        },
        "turnover_median_s": round(statistics.median(turnover), 2),
        "turnover_s": turnover,
        "trials": per_trial,
    }


def _children_cpu_s() -> float:
    """User + system seconds of the finished processes this one waited for, and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _trial_phases(home: Path) -> tuple[list[dict[str, float]], list[float]]:
    """Seconds from each trial's submission to each phase, from the store and the logs; and
    each turnover: from a trial's outcome (its worker's last log line) to the next trial's
    launch, which with one trial at a time is the worker's exit plus the runner seeing it."""
    from trainyard.settings import Settings
    from trainyard.store import open_store, repository

    store = open_store(Settings(home=home).resolved_database_url())
    phases, outcomes, launches = [], [], []
    try:
        with store.session() as session:
            experiment = repository.list_experiments(session)[0]
            for trial in repository.list_trials(session, experiment_id=experiment.id):
                metrics = repository.list_metrics(session, trial_id=trial.id, kind="training")
                submitted = trial.created_at
                assert trial.started_at is not None and trial.log_path is not None
                times = {
                    "launched": trial.started_at,
                    **_log_marks(Path(trial.log_path)),
                    "first step": metrics[0].reported_at,
                }
                phases.append(
                    {p: round((times[p] - submitted).total_seconds(), 3) for p in PHASES}
                )
                outcomes.append(times["outcome"])
                launches.append(trial.started_at)
    finally:
        store.close()
    order = sorted(range(len(launches)), key=lambda i: launches[i])
    turnover = [
        round((launches[later] - outcomes[earlier]).total_seconds(), 3)
        for earlier, later in itertools.pairwise(order)
    ]
    return phases, turnover


def _log_marks(log: Path) -> dict[str, datetime]:
    """When the worker's log first shows each mark (worker log times are local time)."""
    found: dict[str, datetime] = {}
    for line in log.read_text(errors="replace").splitlines():
        stamp = _LOG_TIME.match(line)
        if stamp is None:
            continue
        for mark, pattern in _MARKS.items():
            if mark not in found and pattern.search(line):
                local = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
                found[mark] = local.astimezone().astimezone(UTC)
    missing = sorted(set(_MARKS) - set(found))
    if missing:
        raise SystemExit(f"{log} has no line for {missing}; did the worker's log lines change?")
    return found


def _with_cluster(workdir: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same search through a throwaway SLURM cluster, torn down afterwards; with
    `--before`, the older code's search and the current one's take turns on the same cluster,
    so that both meet the same load."""
    state = workdir / "slurm"
    up = subprocess.run(
        [DEPLOY_SLURM / "cluster-up.sh", str(state)], capture_output=True, text=True, timeout=120
    )
    try:
        if up.returncode != 0:
            raise SystemExit(f"cluster-up.sh failed:\n{up.stdout}{up.stderr}")
        env = {"SLURM_CONF": str(state / "etc" / "slurm.conf")}
        variants: list[tuple[str, dict[str, str]]] = [("slurm", env)]
        if args.before is not None:
            before = {**env, "PYTHONPATH": str(args.before.resolve())}
            variants.insert(0, ("slurm, before", before))
        runs = {}
        for round_ in range(1, args.rounds + 1):
            for label, variant_env in variants:
                where = label if args.rounds == 1 else f"{label}, round {round_}"
                home = workdir / f"slurm-home-{len(runs)}"
                runs[where] = _run(where, data, home, args.trials, variant_env)
        return runs
    finally:
        subprocess.run([DEPLOY_SLURM / "cluster-down.sh", str(state)], capture_output=True)


def _machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "slurm": shutil.which("sbatch") is not None,
    }


def _markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Trial start-up: submission to first training step",
        "",
        f"{results['date']}, {machine['cpu']} ({machine['cores']} cores), torch "
        f"{machine['torch']}. {results['settings']['trials']} ParticleNet-Lite trials one at a "
        "time; seconds from the trial's submission, medians over the trials (the first one "
        "also stages the data).",
        "",
        "| where | submit to first step: median (range) | "
        + " | ".join(PHASES)
        + " | turnover | CPU s / trial | load |",
        "|---|---|" + "---|" * len(PHASES) + "---|---|---|",
    ]
    for where, run in results["runs"].items():
        first = run["submit_to_first_step_s"]
        phases = " | ".join(f"{run['phase_medians_s'][p]:.2f}" for p in PHASES)
        load = f"{run['load_average_before'][0]:.2f} / {run['load_average_after'][0]:.2f}"
        lines.append(
            f"| {where} | **{first['median']:.2f}** ({first['min']:.2f}-{first['max']:.2f}) | "
            f"{phases} | {run['turnover_median_s']:.2f} | {run['cpu_s_per_trial']:.2f} | "
            f"{load} |"
        )
    lines += [
        "",
        "turnover: median seconds from a trial's outcome (its worker's last log line) to the "
        "next trial's launch: the worker's exit and the runner seeing it.",
        "CPU s / trial: user + system seconds of `trainyard run` and the processes it waited for "
        "(locally every worker; on SLURM the workers are slurmd's), per trial.",
        "load: 1-minute load average before / after the run.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""ASHA versus grid search over the same ParticleNet-Lite configurations, in one run.

Both searches run through `trainyard run` on the same toy data with the same 16 (or more)
configurations (ASHA proposes the grid's points, in another order); the script writes the
fraction of training batches ASHA used relative to the grid and the best validation AUC each
found, to benchmarks/results/search.json and search.md.

    .venv/bin/python benchmarks/search.py            # about 10-15 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from trainyard.datasets.toy import write_toy_dataset
from trainyard.settings import Settings
from trainyard.store import open_store, repository

RESULTS = Path(__file__).parent / "results"
GRID = {
    "lr": {"type": "log", "min": 3.0e-4, "max": 1.0e-2, "count": 4},
    "k": {"type": "categorical", "vals": [5, 8]},
    "fc_dim": {"type": "categorical", "vals": [32, 128]},
}


def experiment(name: str, searcher: dict[str, Any], data: Path, rung: int) -> dict[str, Any]:
    """One ParticleNet-Lite search; the rung (validation period) is the unit of ASHA."""
    return {
        "name": name,
        "model": "particlenet-lite",
        "data": {
            "train": str(data / "train" / "*.parquet"),
            "val": str(data / "val" / "*.parquet"),
            "max_particles": 32,
        },
        "hyperparameters": {**GRID, "batch_size": 128},
        "searcher": searcher,
        "resources": {"max_concurrent_trials": 2},
        "training": {
            "max_length": {"batches": 9 * rung},
            "validation_period": {"batches": rung},
            "optimizer": {"name": "adamw"},
            "log_period_batches": 10,
            "seed": 1,
        },
        "checkpoint": {"period": {"batches": 9 * rung}, "keep": 1},
    }


def run_search(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one search with its own trainyard home; read batches and AUCs from its store."""
    home = workdir / config["name"]
    file = workdir / f"{config['name']}.yaml"
    file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TRAINYARD_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from trainyard.cli.app import main; main()", "run", str(file)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    store = open_store(Settings(home=home).resolved_database_url())
    with store.session() as session:
        (found,) = repository.list_experiments(session)
        trials = repository.list_trials(session, experiment_id=found.id)
        aucs = [
            max(
                m.values["val_auc"]
                for m in repository.list_metrics(session, trial_id=t.id, kind="validation")
            )
            for t in trials
        ]
        states = [t.state.value for t in trials]
        batches = sum(t.batches_trained for t in trials)
    store.close()
    return {
        "trials": len(trials),
        "states": {s: states.count(s) for s in sorted(set(states))},
        "batches": batches,
        "best_val_auc": max(aucs),
        "wall_s": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-jets", type=int, default=12_800)
    parser.add_argument("--val-jets", type=int, default=4_000)
    parser.add_argument("--rung", type=int, default=20, help="batches per validation rung")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainyard-search-bench-") as tmp:
        workdir = Path(tmp)
        write_toy_dataset(workdir / "data" / "train", num_jets=args.train_jets, seed=21)
        write_toy_dataset(workdir / "data" / "val", num_jets=args.val_jets, seed=22)
        data = workdir / "data"
        grid = run_search(experiment("grid", {"name": "grid"}, data, args.rung), workdir)
        asha_searcher = {
            "name": "asha",
            "seed": 3,
            "asha": {"sampler": "grid", "reduction_factor": 3},
        }
        asha = run_search(experiment("asha", asha_searcher, data, args.rung), workdir)
    result = {
        "benchmark": "search",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "settings": vars(args) | {"grid": GRID, "max_batches_per_trial": 9 * args.rung},
        "grid": grid,
        "asha": asha,
        "asha_batch_fraction": round(asha["batches"] / grid["batches"], 4),
        "auc_gap": round(grid["best_val_auc"] - asha["best_val_auc"], 5),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "search.md").write_text(_markdown(result))
    print(_markdown(result))


def _markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {name} | {r[name]['trials']} | {r[name]['batches']} | {r[name]['best_val_auc']:.4f} "
        f"| {r[name]['wall_s']} | {r[name]['states']} |"
        for name in ("grid", "asha")
    )
    return (
        f"# Search benchmark ({r['date']}, {r['machine']['cpus']} CPUs)\n\n"
        "| searcher | trials | batches trained | best val AUC | wall s | trial states |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n\n"
        f"ASHA used {r['asha_batch_fraction']:.1%} of grid's batches (goal <= 35%); its best AUC "
        f"is {r['auc_gap']:+.4f} below grid's (goal within 0.005).\n"
    )


if __name__ == "__main__":
    main()

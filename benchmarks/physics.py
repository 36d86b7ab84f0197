"""Physics check: ParticleNet, ParT and PFN trained on Pythia top-tagging jets, short budget.

The data comes from `trainyard data generate top-tagging` (train and validation splits with
their own seeds; a folder given with `--data` is reused, and completed if a run there was cut
short). Each model is then trained through `trainyard run` as a user would train it: a real
subprocess on an experiment file written from its `RECIPES` entry, with its own home. Every
model gets the same number of steps, batch size and validation set; the optimizer settings
follow each model's paper, scaled down to the short budget. The validation metrics (AUC,
accuracy, background rejection at 30% and 50% signal efficiency) and the trial's training time
are read back from that home's store, not from the console. Each model is trained once per
`--seeds` value (`training.seed`: initial weights and batch order; the data stays the same)
and reported as the median with the range.
Writes benchmarks/results/physics-cpu.json and .md (`--tag` changes the name).

    nice -n 19 .venv/bin/python -m benchmarks.physics --data data/physics   # ~50 min, 2 busy cores
    .venv/bin/python -m benchmarks.physics --quick --out /tmp/physics        # a dry run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.environment import describe
from benchmarks.physics_report import Budget, PhysicsResult, Recipe, Run, markdown
from benchmarks.results_files import write_results
from trainyard.config.schema import (
    DataSpec,
    ExperimentConfig,
    Length,
    LRScheduleSpec,
    ModelSpec,
    OptimizerSpec,
    TrainingSpec,
)
from trainyard.models import build_model
from trainyard.settings import Settings
from trainyard.store import open_store, repository

RESULTS_DIR = Path(__file__).parent / "results"
RUN_TIMEOUT_S = 3600
"""One model's `trainyard run` takes minutes at the default sizes; a hung one is stopped."""
DATA_SEEDS = {"train": 1, "val": 2}
"""Each split its own Pythia seed (docs/datasets.md); the training seeds vary, the data not."""
MODELS = ("particlenet", "particle-transformer", "pfn")


RECIPES = {
    "particlenet": Recipe(
        model="particlenet",
        lr=3e-3,
        weight_decay=1e-4,
        note="paper sizes; the paper's weight decay 1e-4 and the peak lr 3e-3 of its one-cycle",
    ),
    "particle-transformer": Recipe(
        model="particle-transformer",
        lr=1e-3,
        weight_decay=0.01,
        note="paper sizes; the paper's lr 1e-3, weight decay 0.01 (there with Lookahead-RAdam)",
    ),
    "pfn": Recipe(
        model="pfn",
        lr=1e-3,
        weight_decay=0.0,
        note="paper sizes Phi (100, 100, 256), F (100, 100, 100); the paper's Adam lr 1e-3",
    ),
}
QUICK_OPTIONS = {
    "particlenet": {"k": 4, "conv_channels": [[8, 8, 8]], "fc_dim": 16},
    "particle-transformer": {
        "embed_dims": [16, 16],
        "pair_embed_dims": [8, 8],
        "num_heads": 2,
        "num_layers": 1,
        "num_cls_layers": 1,
    },
    "pfn": {"phi_sizes": [16, 16], "f_sizes": [16]},
}
"""--quick: small options so that the three runs check the path, not the physics."""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    environment = describe()
    budget = Budget(
        train_jets=args.train_jets,
        val_jets=args.val_jets,
        steps=args.steps,
        batch_size=args.batch_size,
        warmup_steps=max(1, args.steps // 10),
    )
    recipes = [_recipe(name, args) for name in args.models]
    with tempfile.TemporaryDirectory(prefix="trainyard-physics-") as scratch:
        data = (args.data or Path(scratch) / "data").resolve()
        data_s = generate(data, budget, workers=args.workers)
        runs: list[Run] = []
        for seed in args.seeds:
            for recipe in recipes:
                runs.append(train(recipe, budget, data, seed, Path(scratch)))
                print(_progress(runs[-1]), flush=True)
                # Written after every run, so a long run cut short still leaves its table.
                result = PhysicsResult(
                    environment=environment,
                    load_average_end=tuple(round(x, 2) for x in os.getloadavg()),
                    command=" ".join(["python -m benchmarks.physics", *(argv or sys.argv[1:])]),
                    quick=args.quick,
                    budget=budget,
                    recipes=recipes,
                    data=str(data),
                    data_generate_s=round(data_s, 1),
                    runs=runs,
                )
                write_results(args.out, args.tag, result.model_dump(mode="json"), markdown(result))
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder of the Pythia jets (made or reused)")
    parser.add_argument("--train-jets", type=int, default=40_000)
    parser.add_argument("--val-jets", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--workers", type=int, help="Pythia processes (default: every CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default="physics-cpu")
    parser.add_argument("--quick", action="store_true", help="a dry run: tiny data and models")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_jets, args.val_jets, args.steps, args.batch_size = 200, 200, 2, 32
        args.seeds = args.seeds[:1]
    if args.train_jets < args.batch_size:
        parser.error(
            f"--train-jets is {args.train_jets}: fewer than one batch of --batch-size "
            f"{args.batch_size}"
        )
    return args


def _recipe(name: str, args: argparse.Namespace) -> Recipe:
    recipe = RECIPES[name]
    if args.quick:
        quick = {"options": QUICK_OPTIONS[name], "max_particles": 16, "note": "tiny (--quick)"}
        return recipe.model_copy(update=quick)
    return recipe


def generate(data: Path, budget: Budget, *, workers: int | None) -> float:
    """Make (or complete, or reuse) the train and val splits; the seconds it took."""
    started = time.perf_counter()
    for split, jets in (("train", budget.train_jets), ("val", budget.val_jets)):
        command = [*_trainyard(), "data", "generate", "top-tagging", "--jets", str(jets)]
        command += ["--out", str(data / split), "--seed", str(DATA_SEEDS[split])]
        command += ["--jets-per-shard", str(min(jets, 5_000))]
        if workers is not None:
            command += ["--workers", str(workers)]
        subprocess.run(command, check=True, timeout=RUN_TIMEOUT_S, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def experiment(recipe: Recipe, budget: Budget, data: Path, seed: int) -> ExperimentConfig:
    """The experiment file of one run: one trial, validated once, at the end."""
    end = Length(batches=budget.steps)
    return ExperimentConfig(
        name=f"physics-{recipe.model}-s{seed}",
        model=ModelSpec(name=recipe.model, options=recipe.options),
        data=DataSpec(
            train=str(data / "train" / "*.parquet"),
            val=str(data / "val" / "*.parquet"),
            max_particles=recipe.max_particles,
        ),
        training=TrainingSpec(
            max_length=end,
            batch_size=budget.batch_size,
            optimizer=OptimizerSpec(name="adamw", lr=recipe.lr, weight_decay=recipe.weight_decay),
            lr_schedule=LRScheduleSpec(name="cosine", warmup_batches=budget.warmup_steps),
            grad_clip_norm=5.0,
            validation_period=end,
            seed=seed,
        ),
    )


def train(recipe: Recipe, budget: Budget, data: Path, seed: int, scratch: Path) -> Run:
    """`trainyard run` one model in its own home; its numbers read back from the store."""
    config = experiment(recipe, budget, data, seed)
    home = scratch / config.name
    home.mkdir()
    file = home / "experiment.yaml"
    file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    started = time.perf_counter()
    subprocess.run(
        [*_trainyard(), "run", str(file)],
        env={**os.environ, "TRAINYARD_HOME": str(home)},
        check=True,
        timeout=RUN_TIMEOUT_S,
        stdout=subprocess.DEVNULL,
    )
    run_s = time.perf_counter() - started
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            (found,) = repository.list_experiments(session)
            (trial,) = repository.list_trials(session, experiment_id=found.id)
            last = repository.latest_metrics(session, trial_id=trial.id, kind="validation")
            if last is None or trial.started_at is None or trial.ended_at is None:
                raise RuntimeError(
                    f"{config.name}: the trial ended {trial.state.value} without a validation; "
                    f"its log is {trial.log_path}"
                )
            values, steps = dict(last.values), trial.batches_trained
            train_s = (trial.ended_at - trial.started_at).total_seconds()
    finally:
        store.close()
    return Run(
        model=recipe.model,
        seed=seed,
        parameters=_parameters(recipe),
        max_particles=recipe.max_particles,
        lr=recipe.lr,
        steps=steps,
        train_s=round(train_s, 1),
        run_s=round(run_s, 1),
        **{name: values[name] for name in _METRICS},
    )


_METRICS = ("val_auc", "val_accuracy", "val_rej30", "val_rej50", "val_loss")


def _parameters(recipe: Recipe) -> int:
    """Weights of the model as the run built it: the 7 built-in features, 2 classes."""
    model = build_model(recipe.model, num_features=7, num_classes=2, options=recipe.options)
    return sum(p.numel() for p in model.parameters())


def _trainyard() -> list[str]:
    """The CLI of the Python running this script, so the benchmark's virtualenv is used."""
    return [sys.executable, "-c", "from trainyard.cli.app import main; main()"]


def _progress(run: Run) -> str:
    return (
        f"{run.model} seed {run.seed}: AUC {run.val_auc:.4f}, accuracy {run.val_accuracy:.4f}, "
        f"1/eps_B at 30% {run.val_rej30:.1f}, 50% {run.val_rej50:.1f}; {run.train_s:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())

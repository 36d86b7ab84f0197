"""The physics check's record: recipes, budget, runs, and the Markdown table over seeds.

physics.py trains and hands its runs here as typed records; this module summarises them per
model (median and range over the seeds) into benchmarks/results/<tag>.md, beside the JSON of
everything measured.
"""

from __future__ import annotations

import statistics

from pydantic import BaseModel, ConfigDict

from benchmarks.environment import Environment


class Recipe(BaseModel):
    """How one model is trained in the short budget: options and optimizer from its paper."""

    model_config = ConfigDict(frozen=True)

    model: str
    options: dict[str, object] = {}
    """The model's options; none: the paper's sizes, which are the zoo's defaults."""
    lr: float
    weight_decay: float
    max_particles: int = 32
    """The hardest constituents fed (top jets hold about 74, QCD jets 60): the cost of
    ParticleNet and ParT grows with it, and 32 keeps both within the CPU budget."""
    note: str


class Budget(BaseModel):
    """What every model gets alike."""

    model_config = ConfigDict(frozen=True)

    train_jets: int
    val_jets: int
    steps: int
    batch_size: int
    warmup_steps: int


class Run(BaseModel):
    """One model trained once: its settings and what the store says it reached."""

    model_config = ConfigDict(frozen=True)

    model: str
    seed: int
    parameters: int
    max_particles: int
    lr: float
    steps: int
    train_s: float
    """The trial's started_at to ended_at in the store: training and the validations."""
    run_s: float
    """The whole `trainyard run` subprocess, start-up and staging included."""
    val_auc: float
    val_accuracy: float
    val_rej30: float
    val_rej50: float
    val_loss: float


class PhysicsResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    benchmark: str = "physics"
    environment: Environment
    load_average_end: tuple[float, float, float]
    command: str
    quick: bool
    budget: Budget
    recipes: list[Recipe]
    data: str
    data_generate_s: float
    runs: list[Run]


def summarise(values: list[float]) -> tuple[float, float, float]:
    """Median, min, max."""
    return statistics.median(values), min(values), max(values)


def _figure(values: list[float], digits: int) -> str:
    """Median (min-max); a single value alone."""
    median, low, high = summarise(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def _row(recipe: Recipe, runs: list[Run], budget: Budget) -> str:
    first = runs[0]
    return (
        f"| {recipe.model} | {first.parameters:,} | {first.max_particles} "
        f"| {budget.train_jets:,} / {budget.val_jets:,} | {first.steps} x {budget.batch_size} "
        f"| {recipe.lr:g} | {_figure([r.train_s for r in runs], 0)} "
        f"| {_figure([r.val_auc for r in runs], 4)} "
        f"| {_figure([r.val_accuracy for r in runs], 4)} "
        f"| {_figure([r.val_rej50 for r in runs], 1)} "
        f"| {_figure([r.val_rej30 for r in runs], 1)} |"
    )


_HEADER = (
    "| model | parameters | particles | jets train / val | steps x batch | lr "
    "| train s | AUC | accuracy | 1/eps_B at eps_S 50% | 1/eps_B at eps_S 30% |\n"
    + "| --- " * 11
    + "|"
)


def markdown(result: PhysicsResult) -> str:
    env, budget = result.environment, result.budget
    seeds = sorted({run.seed for run in result.runs})
    # A table written part way through a run has rows only for the models trained so far.
    runs = {
        recipe.model: [r for r in result.runs if r.model == recipe.model]
        for recipe in result.recipes
    }
    rows = "\n".join(
        _row(recipe, runs[recipe.model], budget) for recipe in result.recipes if runs[recipe.model]
    )
    notes = "\n".join(f"- {recipe.model}: {recipe.note}" for recipe in result.recipes)
    load = env.load_average
    title = "Physics check: top tagging on Pythia jets" + (
        " (quick dry run)" if result.quick else ""
    )
    return f"""# {title}

{env.date}; {env.cpu_model}, {env.cores} CPUs; torch {env.torch}. Load average (1, 5, 15 min)
{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} at the start and {result.load_average_end[0]:.2f},
{result.load_average_end[1]:.2f}, {result.load_average_end[2]:.2f} at the end.

`{result.command}`

Pythia 8 top (signal) and QCD jets from `trainyard data generate top-tagging` (no MPI; train
seed 1, val seed 2; {result.data_generate_s:.0f} s to make or reuse them). Every model:
{budget.steps} steps of {budget.batch_size} jets through `trainyard run`, AdamW, cosine
schedule after {budget.warmup_steps} warm-up steps, gradient clipping at 5, the built-in
inputs (7 top_kin features), one validation at the end on all {budget.val_jets:,} validation
jets. Figures are the median over training seeds {", ".join(map(str, seeds))} (range in
brackets); the data is the same for every seed. "train s" is the trial's training and
validation time from the store, measured while other work shared the machine.

{_HEADER}
{rows}

{notes}
"""

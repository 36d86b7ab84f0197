"""`trainyard data ...`: generate jet datasets (and, later, stage them for training)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

data_app = typer.Typer(help="Generate and prepare jet datasets.", no_args_is_help=True)
generate_app = typer.Typer(help="Generate datasets.", no_args_is_help=True)
data_app.add_typer(generate_app, name="generate")

console = Console()


@generate_app.command("toy")
def generate_toy(
    out: Annotated[Path, typer.Option(help="Folder; train/ and val/ are created inside.")],
    train_jets: Annotated[int, typer.Option(help="Jets in the training split.")] = 40_000,
    val_jets: Annotated[int, typer.Option(help="Jets in the validation split.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the training split; val uses seed + 1.")] = 1,
) -> None:
    """Write a toy top-vs-QCD jet set (fast numpy generator) as Parquet shards."""
    from trainyard.datasets.toy import write_toy_dataset

    started = time.perf_counter()
    train = write_toy_dataset(out / "train", num_jets=train_jets, seed=seed)
    val = write_toy_dataset(out / "val", num_jets=val_jets, seed=seed + 1)
    console.print(
        f"wrote {train_jets} training jets ({len(train)} shard(s)) and {val_jets} validation jets "
        f"({len(val)} shard(s)) under {out} in {time.perf_counter() - started:.1f} s"
    )

"""`trainyard data ...`: generate jet datasets and stage them for training."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from trainyard.cli.output import make_console

data_app = typer.Typer(help="Generate and prepare jet datasets.", no_args_is_help=True)
generate_app = typer.Typer(help="Generate datasets.", no_args_is_help=True)
data_app.add_typer(generate_app, name="generate")

console = make_console()


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
        f"({len(val)} shard(s)) under {escape(str(out))} in {time.perf_counter() - started:.1f} s"
    )


@generate_app.command("top-tagging")
def generate_top_tagging(
    jets: Annotated[int, typer.Option(help="Jets in all, top and QCD together.")],
    out: Annotated[Path, typer.Option(help="Folder of the shards; a rerun completes it.")],
    seed: Annotated[int, typer.Option(help="Run seed; shard i seeds Pythia from (seed, i).")] = 1,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Processes in parallel (default: every CPU this process may use)."
        ),
    ] = None,
    mpi: Annotated[
        bool, typer.Option("--mpi/--no-mpi", help="Multi-parton interactions (underlying event).")
    ] = False,
    jets_per_shard: Annotated[int, typer.Option(help="Jets per Parquet shard.")] = 10_000,
    signal_fraction: Annotated[float, typer.Option(help="Share of top jets.")] = 0.5,
    pythia_settings: Annotated[
        list[str] | None,
        typer.Option(
            "--pythia", help='Extra Pythia setting, e.g. "Tune:pp = 14"; repeat for more.'
        ),
    ] = None,
) -> None:
    """Simulate top and QCD jets with Pythia 8 + FastJet as Parquet shards (resumable)."""
    from trainyard.datasets.parallel import write_shards
    from trainyard.datasets.pythia import TopTaggingSettings
    from trainyard.datasets.top_tagging import plan_top_tagging_dataset

    settings = TopTaggingSettings(mpi=mpi, extra_pythia=tuple(pythia_settings or ()))
    plan = plan_top_tagging_dataset(
        out,
        num_jets=jets,
        seed=seed,
        jets_per_shard=jets_per_shard,
        signal_fraction=signal_fraction,
        settings=settings,
    )
    num_shards = len(plan.shard_sizes)
    if not plan.missing:
        console.print(
            f"{escape(str(out))} already holds all {jets} jets ({num_shards} shard(s)); "
            "nothing to do"
        )
        return
    num_workers = min(workers or _usable_cpus(), len(plan.missing))
    console.print(
        f"{escape(str(out))}: {len(plan.finished)} of {num_shards} shard(s) already done; making "
        f"{len(plan.missing)} with {num_workers} worker(s), MPI {'on' if mpi else 'off'}"
    )
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]top-tagging"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("jets"),
        _JetRateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("jets", total=plan.num_items, completed=plan.num_items_done)
            write_shards(
                plan, num_workers=num_workers, report=lambda count: progress.advance(task, count)
            )
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/yellow]: finished shards are kept; rerun the same command "
            "to make the rest"
        )
        raise typer.Exit(130) from None
    elapsed = time.perf_counter() - started
    num_made = plan.num_items - plan.num_items_done
    console.print(
        f"made {num_made} jets in {len(plan.missing)} shard(s) in {elapsed:.1f} s "
        f"({num_made / elapsed:.0f} jets/s, {num_made / elapsed / num_workers:.0f} per worker); "
        f"{escape(str(out))} holds {plan.num_items} jets in {num_shards} shard(s)"
    )


@data_app.command("stage")
def stage_data(
    files: Annotated[list[str], typer.Argument(help="Parquet files, folders or glob patterns.")],
    data_config: Annotated[
        Path | None,
        typer.Option(
            "--data-config",
            help="weaver data config (YAML); default: the built-in ParticleNet inputs "
            "(points/features/mask/labels).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Cache root; default: $TRAINYARD_HOME/cache/staged."),
    ] = None,
    training: Annotated[
        bool,
        typer.Option(
            "--training/--testing",
            help="With --data-config: weaver's training arrays (selection, weights; its train "
            "and val loaders) or its test arrays (test_time_selection).",
        ),
    ] = True,
    max_particles: Annotated[
        int, typer.Option(min=1, help="Particle slots per jet of the built-in inputs.")
    ] = 128,
    jets_per_shard: Annotated[int, typer.Option(min=1, help="Jets per shard file.")] = 1 << 20,
) -> None:
    """Preprocess jets once into memory-mappable shards for training; reused while unchanged."""
    from trainyard.data.reader import resolve_files
    from trainyard.data.staged.sources import (
        ChunkSource,
        ParticleNetSource,
        WeaverConfigSource,
        stage_source,
    )
    from trainyard.data.staged.staging import find_staged, staging_key
    from trainyard.settings import Settings

    paths = resolve_files(files)
    source: ChunkSource
    if data_config is None:
        source = ParticleNetSource(paths, max_particles=max_particles)
    else:
        source = WeaverConfigSource(paths, data_config, training=training)
    cache_root = out if out is not None else Settings().staging_dir()
    reused = find_staged(cache_root, staging_key(source.files, source.config_text()))
    started = time.perf_counter()
    dataset = stage_source(source, cache_root, jets_per_shard=jets_per_shard)
    arrays = ", ".join(f"{name} {spec.shape}" for name, spec in sorted(dataset.specs.items()))
    root = escape(str(dataset.root))
    if reused is not None:
        console.print(f"{root} already holds these {dataset.num_jets} jets; reused")
        return
    console.print(
        f"staged {dataset.num_jets} jets from {len(paths)} file(s) in "
        f"{time.perf_counter() - started:.1f} s: {dataset.num_bytes / 2**30:.2f} GiB in "
        f"{len(dataset.shard_sizes)} shard(s) of {escape(arrays)}\n{root}"
    )


@data_app.command("cache")
def cache(
    evict_now: Annotated[
        bool,
        typer.Option(
            "--evict",
            help="Evict least recently used datasets past TRAINYARD_STAGING_CACHE_MAX_GB now "
            "(or --max-gb); datasets a trial reads stay.",
        ),
    ] = False,
    max_gb: Annotated[
        float | None, typer.Option(min=0, help="Limit for --evict, in GB (10^9 bytes).")
    ] = None,
) -> None:
    """List the staging cache: each dataset's size, last use and whether a trial reads it."""
    from rich.table import Table

    from trainyard.data.staged.cache import cache_entries, evict
    from trainyard.settings import Settings

    settings = Settings()
    cache_root = settings.staging_dir()
    limit = max_gb if max_gb is not None else settings.staging_cache_max_gb
    if evict_now:
        if limit is None:
            console.print(
                "[red]error:[/red] --evict needs a limit: pass --max-gb or set "
                "TRAINYARD_STAGING_CACHE_MAX_GB"
            )
            raise typer.Exit(2)
        gone = evict(cache_root, max_bytes=int(limit * 1e9))
        freed = sum(entry.num_bytes for entry in gone) / 1e9
        console.print(f"evicted {len(gone)} dataset(s), {freed:.2f} GB")
    entries = cache_entries(cache_root)
    table = Table(title=escape(f"staging cache {cache_root}"), title_justify="left")
    for column in ("key", "size", "last used", "in use"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for entry in reversed(entries):  # most recently used first
        table.add_row(
            entry.key,
            f"{entry.num_bytes / 1e9:.2f} GB",
            entry.last_used.isoformat(timespec="seconds"),
            "yes" if entry.in_use else "",
        )
    console.print(table)
    total = sum(entry.num_bytes for entry in entries) / 1e9
    console.print(
        f"{len(entries)} dataset(s), {total:.2f} GB"
        + (f" of a {limit:g} GB limit" if limit is not None else " (no limit set)")
    )


class _JetRateColumn(ProgressColumn):
    """Jets per second over rich's recent window, so a resumed run shows its own speed."""

    def render(self, task: Task) -> Text:
        speed = f"{task.speed:,.0f}" if task.speed else "-"
        return Text(f"{speed} jets/s", style="progress.data.speed")


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity on Linux, all of them elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

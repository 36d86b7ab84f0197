"""The Pythia top-tagging dataset: balanced, shuffled shards of top and QCD jets.

``plan_top_tagging_dataset`` checks the request, makes sure Pythia initialises with these
settings, and finds the shards an earlier run finished; ``parallel.write_shards`` then makes the
rest in a process pool. Shard ``i`` depends only on (seed, i) and the settings, so a resumed
set is the same as one made in a single go.
"""

import functools
import importlib.metadata
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trainyard.datasets import pythia, schema
from trainyard.datasets.jet_table import build_jet_table
from trainyard.datasets.parallel import Report, ShardPlan, plan_shards, split_into_shards
from trainyard.errors import ConfigError

SHARD_PREFIX = "top-tagging"


def plan_top_tagging_dataset(
    out_dir: Path,
    *,
    num_jets: int,
    seed: int,
    jets_per_shard: int = 10_000,
    signal_fraction: float = 0.5,
    settings: pythia.TopTaggingSettings = pythia.TopTaggingSettings(),
) -> ShardPlan:
    """Plan ``num_jets`` jets as shards ``out_dir/top-tagging-NNNN.parquet``.

    Raises ConfigError for an impossible request and DataError when Pythia rejects the
    settings or when ``out_dir`` holds shards made with other settings.
    """
    _check_request(
        num_jets=num_jets,
        seed=seed,
        jets_per_shard=jets_per_shard,
        signal_fraction=signal_fraction,
        settings=settings,
    )
    for process in pythia.PROCESSES:
        # Any seed will do: this only proves that the settings initialise.
        strings = [*settings.pythia_strings(process), "Random:seed = 1"]
        pythia.start_pythia(strings, where=f"the {process} process")
    run_metadata = {
        "generator": pythia.GENERATOR_NAME,
        "version": pythia.GENERATOR_VERSION,
        "seed": seed,
        "num_jets_total": num_jets,
        "jets_per_shard": jets_per_shard,
        "signal_fraction": signal_fraction,
        "max_constituents": schema.MAX_CONSTITUENTS,
        "settings": asdict(settings),
        "pythia": {process: settings.pythia_strings(process) for process in pythia.PROCESSES},
        "versions": {name: importlib.metadata.version(name) for name in ("pythia8mc", "fastjet")},
    }
    return plan_shards(
        out_dir,
        prefix=SHARD_PREFIX,
        shard_sizes=split_into_shards(num_jets, jets_per_shard),
        run_metadata=run_metadata,
        make_shard=functools.partial(
            make_shard, seed=seed, signal_fraction=signal_fraction, settings=settings
        ),
    )


def _check_request(
    *,
    num_jets: int,
    seed: int,
    jets_per_shard: int,
    signal_fraction: float,
    settings: pythia.TopTaggingSettings,
) -> None:
    """Reject impossible requests before Pythia starts, one line per problem."""
    problems = []
    if num_jets < 1:
        problems.append(f"num_jets (--jets) must be at least 1, got {num_jets}; ask for more jets")
    if seed < 0:
        problems.append(f"seed (--seed) must be zero or positive, got {seed}")
    if jets_per_shard < 1:
        problems.append(
            f"jets_per_shard (--jets-per-shard) must be at least 1, got {jets_per_shard}; "
            "10000 is a good size"
        )
    if not 0.0 <= signal_fraction <= 1.0:
        problems.append(
            f"signal_fraction (--signal-fraction) must lie in [0, 1], got {signal_fraction}; "
            "it is the share of top jets"
        )
    problems += settings.problems()
    if problems:
        raise ConfigError(problems, source="top-tagging dataset request")


def make_shard(
    shard_index: int,
    num_jets: int,
    report: Report,
    *,
    seed: int,
    signal_fraction: float,
    settings: pythia.TopTaggingSettings,
) -> tuple[pa.Table, dict[str, Any]]:
    """One shard's jets (tops first generated, then QCD, rows shuffled) and its own metadata.

    Each process gets its own Pythia seed from (seed, shard_index) and the row order comes
    from the same pair, so the shard depends only on the arguments.
    """
    num_top = round(num_jets * signal_fraction)
    counts = {pythia.SIGNAL: num_top, pythia.BACKGROUND: num_jets - num_top}
    seeds = {
        process: pythia.pythia_seed(seed, shard_index, process) for process in pythia.PROCESSES
    }
    parts, num_events = [], {}
    for process in pythia.PROCESSES:
        if counts[process] == 0:
            num_events[process] = 0
            continue
        strings = [*settings.pythia_strings(process), f"Random:seed = {seeds[process]}"]
        generator = pythia.start_pythia(
            strings, where=f"the {process} process of shard {shard_index}"
        )
        jets, num_events[process] = pythia.generate_jets(
            generator, process, counts[process], settings, report
        )
        parts.append(jets)
    jets = pythia.Jets.concatenate(parts)
    labels_N = np.repeat([schema.LABEL_TOP, schema.LABEL_QCD], [num_top, num_jets - num_top])
    table = build_jet_table(
        jets.jet_M, jets.pt_M, jets.eta_M, jets.phi_M, labels_N, mass_M=jets.mass_M
    )
    order_N = np.random.default_rng([seed, shard_index]).permutation(num_jets)
    shard_metadata = {"num_top": num_top, "pythia_seeds": seeds, "num_events": num_events}
    return table.take(order_N), shard_metadata

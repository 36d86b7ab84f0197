"""Loader benchmark: trainyard's staged loader against weaver-core's loader, like with like.

All loaders read the same jets with the same weaver data config (examples/configs/
particlenet-inputs.yaml: 2 points, 7 features, 1 mask channel, 128 slots, zero padding), batch
512. Three comparisons, each figure the median of at least ``--repeats`` passes with its range:

    first epoch   ours: staging (trainyard's weaver-compatible pipeline, WeaverConfigSource)
                  plus the first epoch of StagedLoader, from Parquet files dropped from the
                  page cache; against weaver-core's streaming epoch (SimpleIterDataset +
                  DataLoader as its train.py builds them, fetch_step 0.01, and its fastest
                  streaming mode, fetch_by_files with fetch_step 1), also from cold files and
                  including its start-up
    later epochs  ours: the epochs after the first (StagedLoader, warm page cache); against
                  weaver-core's in_memory mode, its own answer for repeated epochs (all files
                  loaded once per worker, then reshuffled in memory), epochs after the first
    raw read      ours against reading the same staged bytes front to back with 8 MiB reads,
                  cold (after posix_fadvise DONTNEED) and warm: the I/O limit

The load average is recorded before every pass, since a busy machine slows everything. Results
go to benchmarks/results/loader.json and loader.md.

    .venv/bin/python -m benchmarks.loader [--jets 200000] [--files F ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.parquet as pq
import torch

from benchmarks.loader_report import (
    DatasetInfo,
    Pass,
    Passes,
    Settings,
    WeaverMode,
    summarise,
    write,
)
from trainyard.data.reader import resolve_files
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.loader import WEAVER_PARTICLENET_FIELDS, StagedLoader
from trainyard.data.staged.readers import default_gather_threads
from trainyard.data.staged.sources import WeaverConfigSource, stage_source
from trainyard.datasets.toy import write_toy_dataset

RESULTS_DIR = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "examples" / "configs" / "particlenet-inputs.yaml"
RAW_READ_BYTES = 8 << 20
PREFETCH = 4
WEAVER_STREAMING = WeaverMode(
    fetch_by_files=False, fetch_step=0.01, in_memory=False, infinity_mode=False
)
"""weaver-core's default: every file read in 1% slices, one slice of each per fetch."""
WEAVER_BY_FILES = WeaverMode(
    fetch_by_files=True, fetch_step=1, in_memory=False, infinity_mode=False
)
"""weaver-core's fastest streaming mode: one whole file per fetch."""
WEAVER_IN_MEMORY = WeaverMode(
    fetch_by_files=False, fetch_step=1, in_memory=True, infinity_mode=True
)
"""in_memory as its train.py runs it: every event in one fetch (what it advises), and
infinity_mode because in_memory needs --steps-per-epoch."""
T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trainyard-loader-bench-") as temp:
        workdir = Path(temp)
        files, source, generation_s = _input_files(args, workdir)
        config = Path(shutil.copy(CONFIG, workdir / CONFIG.name))  # weaver writes beside it
        print("ours: staging + first epoch, from cold Parquet files ...", flush=True)
        first = _repeat(args, lambda: _ours_first_epoch(files, config, args))
        dataset = stage_source(WeaverConfigSource(files, config), workdir / "cache")
        staged = _loader_files(dataset)
        print("ours: later epochs ...", flush=True)
        later = _ours_later_epochs(dataset, args)
        print("raw read and ours, cold and warm ...", flush=True)
        raw_cold, raw_warm = _repeat_pairs(args, lambda: _raw(staged, dataset.num_jets))
        ours_cold, ours_warm = _repeat_pairs(args, lambda: _ours_cold_warm(dataset, staged, args))
        print("weaver-core: streaming epochs, fetch_step 0.01 ...", flush=True)
        streaming = _repeat(args, lambda: _weaver_epoch(files, config, args, WEAVER_STREAMING))
        print("weaver-core: streaming epochs, fetch_by_files ...", flush=True)
        by_files = _repeat(args, lambda: _weaver_epoch(files, config, args, WEAVER_BY_FILES))
        print("weaver-core: in_memory, later epochs ...", flush=True)
        in_memory = _weaver_in_memory(files, config, args)
        passes = Passes(
            ours_first_epoch=first,
            weaver_streaming=streaming,
            weaver_streaming_by_files=by_files,
            ours_later_epochs=later,
            weaver_in_memory=in_memory,
            ours_cold=ours_cold,
            raw_cold=raw_cold,
            ours_warm=ours_warm,
            raw_warm=raw_warm,
        )
        data = DatasetInfo(
            source=source,
            generation_s=generation_s,
            jets=dataset.num_jets,
            files=len(files),
            parquet_bytes=sum(file.stat().st_size for file in files),
            staged_bytes=dataset.num_bytes,
            staged_bytes_per_jet=dataset.num_bytes // dataset.num_jets,
        )
        result = summarise(_settings(args), data, passes)
    write(result, args.out)
    print((args.out / "loader.md").read_text())
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jets", type=int, default=200_000, help="toy jets to generate")
    parser.add_argument(
        "--files", nargs="+", help="Parquet files/globs in trainyard's jet schema, not toy jets"
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="passes per figure (>= 3)")
    parser.add_argument("--weaver-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument(
        "--gather-threads",
        type=int,
        default=default_gather_threads(),
        help="StagedLoader threads per batch gather (default: its own default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats is {args.repeats}: every figure is a median of 3 or more passes")
    return args


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        data_config=str(CONFIG.relative_to(ROOT)),
        batch_size=args.batch_size,
        repeats=args.repeats,
        prefetch=PREFETCH,
        gather_threads=args.gather_threads,
        weaver_workers=args.weaver_workers,
        weaver_modes={
            "streaming": WEAVER_STREAMING,
            "streaming_by_files": WEAVER_BY_FILES,
            "in_memory": WEAVER_IN_MEMORY,
        },
        raw_read_bytes=RAW_READ_BYTES,
    )


def _input_files(args: argparse.Namespace, workdir: Path) -> tuple[list[Path], str, float | None]:
    """The given files, or freshly generated toy jets; where they come from; generation time."""
    if args.files:
        return resolve_files(args.files), "given files", None
    print(f"generating {args.jets} toy jets ...", flush=True)
    started = time.perf_counter()
    files = write_toy_dataset(workdir / "toy", num_jets=args.jets, seed=1)
    source = "trainyard.datasets.toy, seed 1, 10000 jets per file"
    return files, source, round(time.perf_counter() - started, 2)


def _load() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


def _repeat(args: argparse.Namespace, measure: Callable[[], T]) -> list[T]:
    return [measure() for _ in range(args.repeats)]


def _repeat_pairs(
    args: argparse.Namespace, measure: Callable[[], tuple[Pass, Pass]]
) -> tuple[list[Pass], list[Pass]]:
    """``args.repeats`` (cold, warm) passes, as the cold ones and the warm ones."""
    pairs = _repeat(args, measure)
    return [cold for cold, _ in pairs], [warm for _, warm in pairs]


def _loader(dataset: StagedDataset, args: argparse.Namespace) -> StagedLoader:
    return StagedLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        seed=1,
        prefetch=PREFETCH,
        fields=WEAVER_PARTICLENET_FIELDS,
        gather_threads=args.gather_threads,
    )


def _timed(
    num_jets: int,
    load: float,
    started: float,
    resident_before: float | None = None,
    staging_s: float | None = None,
) -> Pass:
    """The pass that handed out ``num_jets`` from ``started`` (``perf_counter``) until now."""
    seconds = time.perf_counter() - started
    return Pass(
        jets_per_s=num_jets / seconds,
        load_average=load,
        seconds=seconds,
        resident_before=resident_before,
        staging_s=staging_s,
    )


def _epoch(loader: StagedLoader, resident_before: float | None = None) -> Pass:
    """One epoch of ``loader``, timed from its first ``iter`` to its last batch."""
    load = _load()
    started = time.perf_counter()
    return _timed(sum(len(batch) for batch in loader), load, started, resident_before)


def _ours_first_epoch(files: list[Path], config: Path, args: argparse.Namespace) -> Pass:
    """Stage into an empty cache, then train one epoch: what a new dataset costs."""
    resident = _drop_from_page_cache(files)
    load = _load()
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=config.parent))
    started = time.perf_counter()
    dataset = stage_source(WeaverConfigSource(files, config), cache)
    staging_s = time.perf_counter() - started
    loader = _loader(dataset, args)
    first_epoch = _timed(sum(len(batch) for batch in loader), load, started, resident, staging_s)
    loader.close()
    shutil.rmtree(cache)
    return first_epoch


def _ours_later_epochs(dataset: StagedDataset, args: argparse.Namespace) -> list[Pass]:
    """Epochs 2, 3, ... of one loader, after a first epoch that warms the page cache."""
    loader = _loader(dataset, args)
    _epoch(loader)
    epochs = [_epoch(loader) for _ in range(args.repeats)]
    loader.close()
    return epochs


def _ours_cold_warm(
    dataset: StagedDataset, paths: list[Path], args: argparse.Namespace
) -> tuple[Pass, Pass]:
    """One epoch right after dropping the shards from the cache (cold), then the next (warm)."""
    resident = _drop_from_page_cache(paths)
    loader = _loader(dataset, args)
    cold = _epoch(loader, resident)
    warm = _epoch(loader)
    loader.close()
    return cold, warm


def _loader_files(dataset: StagedDataset) -> list[Path]:
    """The shard files of the arrays the loader reads (not the observers)."""
    return [
        dataset.shard_path(name, shard)
        for name in WEAVER_PARTICLENET_FIELDS.values()
        for shard in range(len(dataset.shard_sizes))
    ]


def _raw(paths: list[Path], num_jets: int) -> tuple[Pass, Pass]:
    """Read the loader's shard files front to back with large reads, cold then warm."""
    buffer = memoryview(bytearray(RAW_READ_BYTES))

    def read_all(resident_before: float | None = None) -> Pass:
        load = _load()
        started = time.perf_counter()
        for path in paths:
            with path.open("rb", buffering=0) as file:
                while file.readinto(buffer):
                    pass
        return _timed(num_jets, load, started, resident_before)

    cold = read_all(_drop_from_page_cache(paths))
    return cold, read_all()


def _weaver_loader(
    files: list[Path], config: Path, args: argparse.Namespace, mode: WeaverMode
) -> Any:
    """weaver-core's training dataset and DataLoader, built as its train.py builds them."""
    from torch.utils.data import DataLoader
    from weaver.utils.dataset import SimpleIterDataset

    dataset = SimpleIterDataset(
        {"_": [str(file) for file in files]},
        str(config),
        batch_size=args.batch_size,
        for_training=True,
        load_range_and_fraction=((0, 1), 1, 1),
        name="train",
        **mode.model_dump(),
    )
    num_workers = min(args.weaver_workers, len(files))
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def _weaver_epoch(
    files: list[Path], config: Path, args: argparse.Namespace, mode: WeaverMode
) -> Pass:
    """One whole streaming epoch from cold files, start-up included (as ours includes staging)."""
    resident = _drop_from_page_cache(files)
    load = _load()
    started = time.perf_counter()
    loader = _weaver_loader(files, config, args, mode)
    epoch = _timed(
        sum(len(labels["_label_"]) for _inputs, labels, _observers in loader),
        load,
        started,
        resident,
    )
    del loader  # ends its persistent workers before the next pass
    return epoch


def _weaver_in_memory(files: list[Path], config: Path, args: argparse.Namespace) -> list[Pass]:
    """Epochs after the first in weaver's in_memory mode, as weaver's train loop runs them:
    ``steps_per_epoch`` batches per epoch from workers that keep their data."""
    loader = _weaver_loader(files, config, args, WEAVER_IN_MEMORY)
    steps = sum(pq.read_metadata(file).num_rows for file in files) // args.batch_size
    epochs = []
    for epoch in range(args.repeats + 1):
        load = _load()
        started = time.perf_counter()
        num_jets = 0
        for _inputs, labels, _observers in itertools.islice(loader, steps):
            num_jets += len(labels["_label_"])
        if epoch > 0:  # the first epoch loads and preprocesses every file
            epochs.append(_timed(num_jets, load, started))
    del loader
    return epochs


def _drop_from_page_cache(paths: list[Path]) -> float:
    """Evict ``paths`` from the page cache; returns the share of their bytes still cached."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # dirty pages cannot be dropped
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    return _resident_share(paths)


def _resident_share(paths: list[Path]) -> float:
    """Share of the pages of ``paths`` in the page cache, from mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = os.sysconf("SC_PAGE_SIZE")
    resident = total = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        pages = np.zeros(-(-size // page), dtype=np.uint8)
        status = libc.mincore(
            ctypes.c_void_p(mapped.ctypes.data),
            ctypes.c_size_t(size),
            pages.ctypes.data_as(ctypes.c_void_p),
        )
        if status != 0:
            raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
        resident += int((pages & 1).sum())
        total += len(pages)
        del mapped
    return resident / max(total, 1)


if __name__ == "__main__":
    sys.exit(main())

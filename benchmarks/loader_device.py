"""Loader to GPU: how fast staged jets reach device memory, by each path trainyard has.

The CPU-side loader is measured against weaver-core in loader.py; this one asks what a GPU
trial sees. On one staged dataset (toy jets, the example weaver data config, batch 512), warm
page cache, each figure the median of ``--repeats`` epochs with its range:

    host       StagedLoader epochs on the CPU: what the gather alone delivers
    pageable   the same batches copied to the GPU from ordinary (pageable) memory, as a loop
               that calls ``batch.to("cuda")`` on a plain loader does
    pinned     StagedLoader(device="cuda"): gathered into pinned memory by the prefetch
               thread and copied with non_blocking=True (what trainyard's worker uses)
    kvikio     StagedLoader(io="kvikio"): shards read by kvikio.CuFile straight into GPU
               memory (GPUDirect Storage where the file system offers it); only where kvikio
               imports, otherwise the result says so
    copy       one pinned buffer of a batch's bytes copied to the GPU over and over: the
               host-to-device ceiling for the same bytes

With ``--device cpu`` only ``host`` runs (a dry run of the script).

    python -m benchmarks.loader_device [--device cuda] [--jets 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from benchmarks.environment import Environment, describe, load_average
from trainyard.data.batch import JetBatch
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.loader import WEAVER_PARTICLENET_FIELDS, StagedLoader
from trainyard.data.staged.sources import WeaverConfigSource, stage_source
from trainyard.datasets.toy import write_toy_dataset

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "examples" / "configs" / "particlenet-inputs.yaml"
RESULTS_DIR = Path(__file__).parent / "results"
PATHS = ("host", "pageable", "pinned", "kvikio", "copy")


class Spread(BaseModel):
    """A figure over its passes: median and range, with the load average before each."""

    model_config = ConfigDict(frozen=True)

    jets_per_s: float
    min: float
    max: float
    gb_per_s: float
    passes: list[float]
    load_averages: list[float]


class PathResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    measured: Spread | None
    not_measured_because: str | None = None


class LoaderDeviceResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    benchmark: str = "loader_device"
    environment: Environment
    device: str
    jets: int
    batch_size: int
    bytes_per_jet: int
    repeats: int
    paths: list[PathResult]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="trainyard-loader-device-") as temp:
        workdir = Path(temp)
        print(f"generating and staging {args.jets} toy jets ...", flush=True)
        files = write_toy_dataset(workdir / "toy", num_jets=args.jets, seed=1)
        dataset = stage_source(WeaverConfigSource(files, CONFIG), workdir / "cache")
        bytes_per_jet = _bytes_per_jet(dataset, args.batch_size)
        paths = [_measure(path, dataset, device, args, bytes_per_jet) for path in PATHS]
    result = LoaderDeviceResult(
        environment=describe(),
        device=str(device),
        jets=args.jets,
        batch_size=args.batch_size,
        bytes_per_jet=bytes_per_jet,
        repeats=args.repeats,
        paths=paths,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(result.model_dump_json(indent=2) + "\n")
    table = markdown(result)
    (args.out / f"{args.tag}.md").write_text(table)
    print(table)
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    parser.add_argument("--jets", type=int, default=200_000, help="toy jets to stage")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per figure (>= 3)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--tag", default="loader-device", help="result file name, no suffix")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats is {args.repeats}: every figure is a median of 3 or more passes")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device is {args.device!r}: use cuda, cuda:N or cpu")
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device is {args.device} but torch sees no CUDA device; use --device cpu")
    return args


def _measure(
    path: str,
    dataset: StagedDataset,
    device: torch.device,
    args: argparse.Namespace,
    bytes_per_jet: int,
) -> PathResult:
    if path != "host" and device.type != "cuda":
        return PathResult(path=path, measured=None, not_measured_because="no CUDA device")
    if path == "kvikio":
        try:
            import kvikio  # noqa: F401
        except ImportError:
            reason = "kvikio is not installed: the GPUDirect Storage path was not measured"
            return PathResult(path=path, measured=None, not_measured_because=reason)
    print(f"{path} ...", flush=True)
    epoch = _epoch_runner(path, dataset, device, args.batch_size)
    epoch()  # warm: page cache, pinned buffers, CUDA context
    passes, loads = [], []
    for _ in range(args.repeats):
        loads.append(load_average())
        started = time.perf_counter()
        jets = epoch()
        passes.append(jets / (time.perf_counter() - started))
    median = statistics.median(passes)
    spread = Spread(
        jets_per_s=median,
        min=min(passes),
        max=max(passes),
        gb_per_s=median * bytes_per_jet / 1e9,
        passes=passes,
        load_averages=loads,
    )
    return PathResult(path=path, measured=spread)


def _epoch_runner(
    path: str, dataset: StagedDataset, device: torch.device, batch_size: int
) -> Callable[[], int]:
    """A function that runs one epoch by ``path`` and returns the jets it delivered."""
    if path == "copy":
        return _copy_runner(dataset.num_jets, batch_size, device, _bytes_per_jet(dataset, 1))
    loader = StagedLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        seed=1,
        fields=WEAVER_PARTICLENET_FIELDS,
        device=device if path in ("pinned", "kvikio") else "cpu",
        io="kvikio" if path == "kvikio" else "mmap",
    )

    def run() -> int:
        batches: Iterator[JetBatch] = iter(loader)
        if path == "pageable":
            batches = (batch.to(device) for batch in batches)
        jets = 0
        for batch in batches:
            jets += len(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return jets

    return run


def _copy_runner(
    num_jets: int, batch_size: int, device: torch.device, bytes_per_jet: int
) -> Callable[[], int]:
    source = torch.empty(batch_size * bytes_per_jet, dtype=torch.uint8).pin_memory()
    target = torch.empty_like(source, device=device)
    batches = num_jets // batch_size

    def run() -> int:
        for _ in range(batches):
            target.copy_(source, non_blocking=True)
        torch.cuda.synchronize(device)
        return batches * batch_size

    return run


def _bytes_per_jet(dataset: StagedDataset, batch_size: int) -> int:
    """Bytes of model inputs one jet brings (points, features, mask, label), per jet."""
    loader = StagedLoader(
        dataset, batch_size=batch_size, shuffle=False, seed=1, fields=WEAVER_PARTICLENET_FIELDS
    )
    batch = next(iter(loader))
    loader.close()
    tensors = (
        batch.inputs["points"],
        batch.inputs["features"],
        batch.inputs["mask"],
        batch.labels,
    )
    return sum(tensor.nbytes for tensor in tensors) // len(batch)


def markdown(result: LoaderDeviceResult) -> str:
    env = result.environment
    gpu = env.gpus[0].name if env.gpus else "no GPU"
    lines = [
        f"# Loader to {result.device}: {gpu}, torch {env.torch}, driver {env.driver}",
        "",
        f"{result.jets:,} staged toy jets, batch {result.batch_size}, "
        f"{result.bytes_per_jet} bytes per jet; medians of {result.repeats} warm epochs "
        f"(range); {env.cores} cores ({env.cpu_model}).",
        "",
        "| path | jets/s | GB/s |",
        "| --- | --- | --- |",
    ]
    for entry in result.paths:
        if entry.measured is None:
            lines.append(f"| {entry.path} | not measured: {entry.not_measured_because} | |")
            continue
        m = entry.measured
        lines.append(
            f"| {entry.path} | {m.jets_per_s:,.0f} ({m.min:,.0f}-{m.max:,.0f}) "
            f"| {m.gb_per_s:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

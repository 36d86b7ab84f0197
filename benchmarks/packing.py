"""Packing benchmark: search throughput of K trials packed into one model against one trial at
a time, on the same device in one run.

For each model (ParticleNet-Lite, ParticleNet) it times the ordinary training step of one trial
(forward, cross entropy, backward, AdamW step), then a `PackedModels` step of K trials (K
members with their own learning rates, each on its own batches) for each K. Throughput is in
trial-batches per second; the ratio packed / one-at-a-time is what packing gains a search. On
CUDA the clock is read after `torch.cuda.synchronize()`, and the peak memory of each pass is
recorded. The 1-minute load average is recorded before every pass.

    .venv/bin/python -m benchmarks.packing [--device cpu|cuda] [--precision fp32|bf16]
        [--batch-size 128] [--ks 1 2 4 8] [--models particlenet-lite particlenet]
        [--steps 10] [--repeats 3] [--dropout 0.0] [--out benchmarks/results] [--tag NAME]
        [--quick]

`--dropout` sets every trial's dropout rate: a packed member draws its masks from its own
generator (worker/packing/dropout.py), which this shows the cost of.

Results: <out>/packing-<device>[-<tag>].json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.packing_report import Pass, Settings, summarise, write
from trainyard.config.schema import OptimizerSpec
from trainyard.data.batch import JetBatch
from trainyard.models import build_model
from trainyard.worker.optim import build_optimizer
from trainyard.worker.packing import PackedModels, PackMember

RESULTS_DIR = Path(__file__).parent / "results"
NUM_FEATURES, NUM_CLASSES, NUM_POINT_CHANNELS = 7, 2, 2
DISTINCT_BATCHES = 2
"""Batches made per trial and cycled: enough that no two consecutive steps share inputs."""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    settings = Settings(
        device=str(device),
        precision=args.precision,
        batch_size=args.batch_size,
        particles=args.particles,
        ks=args.ks,
        models=args.models,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        repeats=args.repeats,
        threads=torch.get_num_threads(),
        dropout=args.dropout,
    )
    passes = []
    for repeat, model in itertools.product(range(args.repeats), args.models):
        passes.append(_measure(model, 1, repeat, settings, device, packed=False))
        for k in args.ks:
            passes.append(_measure(model, k, repeat, settings, device, packed=True))
            rate = passes[-1].trial_batches_per_s
            print(f"{model} K={k} repeat {repeat}: {rate:.1f} trial-batches/s", file=sys.stderr)
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = summarise(settings, passes, date=date, device=device)
    name = f"packing-{device.type}" + (f"-{args.tag}" if args.tag else "")
    _, md_path = write(result, args.out, name)
    print(md_path.read_text())
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--models", nargs="+", default=["particlenet-lite", "particlenet"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--quick", action="store_true", help="a dry run in seconds (tiny batches, 1 repeat)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.particles, args.ks = 4, 24, [1, 2]
        args.steps, args.warmup_steps, args.repeats = 1, 1, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu")
    return args


def _measure(
    model: str, k: int, repeat: int, settings: Settings, device: torch.device, *, packed: bool
) -> Pass:
    """One timed pass: `steps` steps of one trial alone, or of a pack of k trials."""
    streams = [_batches(settings, device, seed=index) for index in range(k)]
    autocast = torch.bfloat16 if settings.precision == "bf16" else None
    if packed:
        pack = PackedModels(device=device, autocast_dtype=autocast)
        for index in range(k):
            pack.join(
                _member(str(index), model, device, lr=1e-3 * (index + 1), dropout=settings.dropout)
            )

        def step(i: int) -> None:
            pack.train_step({str(j): s[i % DISTINCT_BATCHES] for j, s in enumerate(streams)})

    else:
        solo = _member("solo", model, device, lr=1e-3, dropout=settings.dropout)
        step = _solo_step(solo, streams[0], device, autocast)
    load = os.getloadavg()[0]
    seconds, peak = _timed(step, settings, device)
    return Pass(
        model=model,
        mode="packed" if packed else "solo",
        k=k,
        repeat=repeat,
        seconds=seconds,
        trial_batches_per_s=k * settings.steps / seconds,
        peak_memory_mib=peak,
        load_average_before=round(load, 2),
    )


def _timed(
    step: Callable[[int], None], settings: Settings, device: torch.device
) -> tuple[float, float | None]:
    """Seconds for the timed steps (after warm-up), and the pass's peak CUDA memory."""
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(settings.warmup_steps):
        step(i)
    if on_cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for i in range(settings.steps):
        step(i)
    if on_cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if on_cuda else None
    return seconds, peak


def _solo_step(
    member: PackMember,
    batches: list[JetBatch],
    device: torch.device,
    autocast: torch.dtype | None,
) -> Callable[[int], None]:
    """The ordinary loop's step (as worker.trainer.Trainer takes it) for one trial."""
    model, optimizer = member.model, member.optimizer
    model.train()

    def step(i: int) -> None:
        batch = batches[i % DISTINCT_BATCHES]
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(batch.inputs["points"], batch.inputs["features"], batch.inputs["mask"])
            loss = F.cross_entropy(logits.float(), batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _member(
    key: str, model: str, device: torch.device, *, lr: float, dropout: float
) -> PackMember:
    built = build_model(
        model, num_features=NUM_FEATURES, num_classes=NUM_CLASSES, options={"dropout": dropout}
    ).to(device)
    optimizer = build_optimizer(built, OptimizerSpec(name="adamw"), lr=lr)
    return PackMember(key=key, model=built, optimizer=optimizer)


def _batches(settings: Settings, device: torch.device, *, seed: int) -> list[JetBatch]:
    """Random jets with 20 to all particle slots real, made once on the device."""
    generator = torch.Generator().manual_seed(seed)
    size, slots = settings.batch_size, settings.particles
    found = []
    for _ in range(DISTINCT_BATCHES):
        num_real = torch.randint(min(20, slots), slots + 1, (size, 1, 1), generator=generator)
        mask = (torch.arange(slots).view(1, 1, -1) < num_real).float()
        batch = JetBatch(
            inputs={
                "points": torch.randn(size, NUM_POINT_CHANNELS, slots, generator=generator) * mask,
                "features": torch.randn(size, NUM_FEATURES, slots, generator=generator) * mask,
                "mask": mask,
            },
            labels=torch.randint(0, NUM_CLASSES, (size,), generator=generator),
        )
        found.append(batch.to(device))
    return found


if __name__ == "__main__":
    sys.exit(main())

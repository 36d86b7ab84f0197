"""Kernel time of training steps: glibc's default malloc against the worker's setting.

Each pass is a fresh process that trains ParticleNet-Lite on staged toy jets the way a trial
does (StagedLoader with prefetch, AdamW, cross entropy) and measures, with getrusage over the
steps after a warm-up, user and system CPU seconds, minor page faults and jets/s. The
"defaults" process leaves malloc as glibc starts it; the "worker" process first calls
`trainyard.worker.allocator.keep_freed_memory()`, as every trial's worker does. Passes of the
two alternate, so a change in the machine's load hits both alike; the summary gives medians
with their range and the 1-minute load average before each pass.

    .venv/bin/python -m benchmarks.kernel_time               # ~3 minutes on 2 CPU cores
    .venv/bin/python -m benchmarks.kernel_time --repeats 1 --steps 10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.results_files import cpu_model, write_results

MODES = ("defaults", "worker")
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
FIGURES = ("user_s", "sys_s", "minor_faults_per_step", "jets_per_s")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="trainyard-kernel-time-") as tmp:
        staged = _stage_toy(Path(tmp), args.jets)
        passes: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                passes[mode].append(_run_child(staged, mode, args))
                print(mode, passes[mode][-1], file=sys.stderr)
    result = _summary(passes, args)
    write_results(args.out, "kernel_time", result, _markdown(result))
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=10_000, help="toy training jets")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes per mode")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--staged", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _stage_toy(workdir: Path, num_jets: int) -> Path:
    from trainyard.data.staged.sources import ParticleNetSource, stage_source
    from trainyard.datasets.toy import write_toy_dataset

    write_toy_dataset(workdir / "toy", num_jets=num_jets, seed=1)
    source = ParticleNetSource(sorted((workdir / "toy").glob("*.parquet")), max_particles=64)
    return stage_source(source, workdir / "cache", on_progress=lambda: None).root


def _run_child(staged: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()[0]
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    command = [sys.executable, "-m", "benchmarks.kernel_time", "--child", "--mode", mode]
    command += ["--staged", str(staged), "--batch-size", str(args.batch_size)]
    command += ["--threads", str(args.threads), "--warmup", str(args.warmup)]
    command += ["--steps", str(args.steps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return {**json.loads(done.stdout.splitlines()[-1]), "load_average_before": load}


def _child(args: argparse.Namespace) -> dict[str, Any]:
    """One pass in this fresh process; malloc is set (or not) before torch allocates."""
    if args.mode == "worker":
        from trainyard.worker.allocator import keep_freed_memory

        assert keep_freed_memory(), "the worker's malloc setting was not applied"
    import torch
    import torch.nn.functional as F

    from trainyard.data.staged.dataset import StagedDataset
    from trainyard.data.staged.loader import StagedLoader
    from trainyard.models import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    dataset = StagedDataset.open(args.staged)
    loader = StagedLoader(dataset, batch_size=args.batch_size, shuffle=True, seed=1)
    model = build_model(
        "particlenet-lite", num_features=dataset.specs["features"].shape[0], num_classes=2
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch: Any) -> None:
        loss = F.cross_entropy(
            model(batch.inputs["points"], batch.inputs["features"], batch.inputs["mask"]),
            batch.labels,
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batches = _endless(loader)
    for _ in range(args.warmup):
        step(next(batches))
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step(next(batches))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user_s": round(after.ru_utime - before.ru_utime, 3),
        "sys_s": round(after.ru_stime - before.ru_stime, 3),
        "minor_faults_per_step": round((after.ru_minflt - before.ru_minflt) / args.steps),
        "jets_per_s": round(args.steps * args.batch_size / wall, 1),
        "wall_s": round(wall, 3),
        "max_rss_mib": round(after.ru_maxrss / 1024),
        "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw,
    }


def _endless(loader: Any) -> Any:
    while True:
        yield from loader


def _summary(passes: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    def figure(mode: str, name: str) -> dict[str, float]:
        values = [run[name] for run in passes[mode]]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    loads = [run["load_average_before"] for runs in passes.values() for run in runs]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "libc": " ".join(platform.libc_ver()),
        },
        "settings": {
            "model": "particlenet-lite",
            "max_particles": 64,
            "jets": args.jets,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "warmup_steps": args.warmup,
            "measured_steps": args.steps,
            "repeats": args.repeats,
        },
        "load_average_before": {
            "median": statistics.median(loads),
            "min": min(loads),
            "max": max(loads),
        },
        "figures": {mode: {name: figure(mode, name) for name in FIGURES} for mode in MODES},
        "passes": passes,
    }


def _markdown(result: dict[str, Any]) -> str:
    settings, load = result["settings"], result["load_average_before"]
    lines = [
        "# Kernel time of training steps",
        "",
        f"{result['date']}, {result['machine']['cpu']} ({result['machine']['cores']} cores), "
        f"torch {result['machine']['torch']}, {result['machine']['libc']}. ParticleNet-Lite, "
        f"{settings['max_particles']} particles, batch {settings['batch_size']}, "
        f"{settings['threads']} threads; {settings['measured_steps']} steps measured after "
        f"{settings['warmup_steps']} warm-up steps, medians (range) of {settings['repeats']} "
        f"passes per mode. 1-minute load average before the passes: median {load['median']:.2f} "
        f"(range {load['min']:.2f}-{load['max']:.2f}).",
        "",
        "| malloc | user s | sys s | minor faults / step | jets/s |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        cells = [
            f"{f['median']:g} ({f['min']:g}-{f['max']:g})"
            for f in (result["figures"][mode][name] for name in FIGURES)
        ]
        label = "glibc defaults" if mode == "defaults" else "worker (keep_freed_memory)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

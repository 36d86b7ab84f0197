"""Model benchmark: trainyard's ParticleNet train step against weaver-core's, same math.

For ParticleNet and ParticleNet-Lite at each batch size, it builds weaver-core's ParticleNet
(weaver.nn.model.ParticleNet, use_fusion=False, trim=False) and trainyard's, loads weaver's
state_dict into ours (strict), checks that the eval outputs agree, and times the train step
(forward, cross-entropy, backward, AdamW step) of both on the same inputs, batch, device and
threads, alternating weaver and ours pass by pass. It records jets/s, peak memory, and the
user and system CPU time and minor page faults per step, with the load average before every
pass. Results go to benchmarks/results/<tag>.json and <tag>.md (tag "model" by default).

    .venv/bin/python -m benchmarks.model [--device cpu|cuda] [--precision fp32|bf16]
        [--compile] [--malloc-tuned] [--batch-sizes 128 512] [--repeats 3] [--tag model]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional
from weaver.nn.model.ParticleNet import ParticleNet as WeaverParticleNet

from benchmarks.model_report import Case, Implementation, Pass, Settings, summarise, write
from trainyard.models import ParticleNet
from trainyard.worker.allocator import keep_freed_memory

RESULTS_DIR = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
NUM_POINTS, NUM_FEATURES, NUM_CLASSES = 2, 7, 2
VARIANTS = {
    "particlenet": ([(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))], 256),
    "particlenet-lite": ([(7, (32, 32, 32)), (7, (64, 64, 64))], 128),
}
"""conv_params and fc width of each variant, as in the paper (dropout 0.1)."""
MULTIPLICITY_MEAN, MULTIPLICITY_SD, MULTIPLICITY_MIN = 50, 20, 5
PARITY_TOLERANCE = 1e-4
SEED = 1902
IMPLEMENTATIONS: tuple[Implementation, ...] = ("weaver-core", "trainyard")
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _configure(args)
    if args.probe_memory:
        print(json.dumps(_measure_memory(args, args.probe_memory)))
        return 0
    cases = []
    for model in args.models:
        for batch_size in args.batch_sizes:
            print(f"{model}, batch {batch_size} ...", flush=True)
            cases.append(_case(args, model, batch_size))
    table = write(summarise(_settings(args), cases), args.out, args.tag)
    print(table.read_text())
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--models", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--slots", type=int, default=128, help="particle slots per jet")
    parser.add_argument("--steps", type=int, default=1, help="train steps per timed pass")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="passes per figure (>= 3)")
    parser.add_argument(
        "--malloc-tuned",
        action="store_true",
        help="the worker's malloc setting (trainyard.worker.allocator) for both models: freed "
        "memory stays in the heap instead of being faulted in again every step",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--tag", default="model", help="result file name: <tag>.json, .md")
    parser.add_argument(
        "--quick", action="store_true", help="a dry run: batch 4, 32 slots, 1 pass of 1 step"
    )
    parser.add_argument("--probe-memory", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.slots, args.steps, args.warmup, args.repeats = [4], 32, 1, 1, 1
    elif args.repeats < 3:
        parser.error(f"--repeats is {args.repeats}: every figure is a median of 3 or more passes")
    largest_k = max(conv[0] for model in args.models for conv in VARIANTS[model][0])
    if args.slots <= largest_k:
        parser.error(f"--slots is {args.slots}: ParticleNet needs more than k={largest_k}")
    return args


def _configure(args: argparse.Namespace) -> None:
    """Threads, and the allocator setting, before any tensor is made."""
    if args.malloc_tuned and not keep_freed_memory():
        raise SystemExit("--malloc-tuned: this C library or environment refused the setting")
    torch.set_num_threads(args.threads)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        threads=args.threads,
        batch_sizes=args.batch_sizes,
        models=args.models,
        slots=args.slots,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        malloc_tuned=args.malloc_tuned,
        quick=args.quick,
        multiplicities=(
            f"real particles per jet ~ normal({MULTIPLICITY_MEAN}, {MULTIPLICITY_SD}) clipped "
            f"to [{MULTIPLICITY_MIN}, slots], padded slots zero"
        ),
        optimizer="AdamW(lr=1e-3)",
    )


def _case(args: argparse.Namespace, model: str, batch_size: int) -> Case:
    """Parity, then alternating timed passes, then peak memory, for one variant and batch."""
    device = torch.device(args.device)
    models = _paired_models(model, device)
    inputs = _inputs(batch_size, args.slots, device)
    difference = _eval_difference(models, inputs)
    if difference > PARITY_TOLERANCE:
        raise RuntimeError(
            f"{model}: eval outputs differ from weaver-core's by {difference:.2e} (more than "
            f"{PARITY_TOLERANCE}): the models do not compute the same thing; fix the model "
            "before timing it"
        )
    steps = {name: _train_step(net, inputs, args) for name, net in models.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    passes = [
        _timed_pass(name, step, batch_size, args.steps, device)
        for _ in range(args.repeats)
        for name, step in steps.items()
    ]
    memory = {name: _peak_memory(args, model, batch_size, name, steps) for name in steps}
    return Case(
        model=model,
        batch_size=batch_size,
        parameters=sum(p.numel() for p in models["trainyard"].parameters()),
        eval_max_abs_diff=difference,
        peak_memory_mib=memory,
        passes=passes,
    )


def _paired_models(model: str, device: torch.device) -> dict[Implementation, nn.Module]:
    """weaver-core's model with fresh weights, and ours with the same state_dict."""
    conv_params, fc_width = VARIANTS[model]
    torch.manual_seed(SEED)
    weaver = WeaverParticleNet(
        NUM_FEATURES,
        NUM_CLASSES,
        conv_params=conv_params,
        fc_params=[(fc_width, 0.1)],
        use_fusion=False,
        trim=False,
    )
    ours = ParticleNet(NUM_FEATURES, NUM_CLASSES, conv_params, fc_params=[(fc_width, 0.1)])
    ours.load_state_dict(weaver.state_dict(), strict=True)
    return {"weaver-core": weaver.to(device), "trainyard": ours.to(device)}


def _inputs(batch_size: int, slots: int, device: torch.device) -> Inputs:
    """Points, features, mask (real particles first, zero padding, as weaver pads) and labels."""
    generator = torch.Generator().manual_seed(SEED)
    counts_B = torch.normal(
        float(MULTIPLICITY_MEAN), float(MULTIPLICITY_SD), (batch_size,), generator=generator
    )
    counts_B = counts_B.round().clamp(MULTIPLICITY_MIN, slots)
    mask_B1P = (torch.arange(slots).view(1, 1, slots) < counts_B.view(-1, 1, 1)).float()
    points_BCP = torch.randn(batch_size, NUM_POINTS, slots, generator=generator) * mask_B1P
    features_BCP = torch.randn(batch_size, NUM_FEATURES, slots, generator=generator) * mask_B1P
    labels_B = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    return tuple(t.to(device) for t in (points_BCP, features_BCP, mask_B1P, labels_B))


def _eval_difference(models: dict[Implementation, nn.Module], inputs: Inputs) -> float:
    """max |ours - weaver| of the eval-mode logits in float32; both models are left in train."""
    logits = []
    with torch.no_grad():
        for net in models.values():
            logits.append(net.eval()(*inputs[:3]))
            net.train()
    return (logits[0] - logits[1]).abs().max().item()


def _train_step(net: nn.Module, inputs: Inputs, args: argparse.Namespace) -> Callable[[], None]:
    """One train step of ``net`` on ``inputs`` (under autocast for bf16), as a closure."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    forward = torch.compile(net) if args.compile else net
    device_type = torch.device(args.device).type
    points_BCP, features_BCP, mask_B1P, labels_B = inputs

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, torch.bfloat16, enabled=args.precision == "bf16"):
            logits_BK = forward(points_BCP, features_BCP, mask_B1P)
        functional.cross_entropy(logits_BK.float(), labels_B).backward()
        optimizer.step()

    return step


def _timed_pass(
    name: Implementation,
    step: Callable[[], None],
    batch_size: int,
    steps: int,
    device: torch.device,
) -> Pass:
    load = os.getloadavg()[0]
    _synchronize(device)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    after = resource.getrusage(resource.RUSAGE_SELF)
    return Pass(
        implementation=name,
        jets_per_s=batch_size / seconds,
        seconds_per_step=seconds,
        user_s_per_step=(after.ru_utime - before.ru_utime) / steps,
        system_s_per_step=(after.ru_stime - before.ru_stime) / steps,
        minor_faults_per_step=(after.ru_minflt - before.ru_minflt) / steps,
        load_average=load,
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(
    args: argparse.Namespace,
    model: str,
    batch_size: int,
    name: Implementation,
    steps: dict[Implementation, Callable[[], None]],
) -> float:
    """MiB that a train step adds at its peak: on CUDA here, on CPU in a fresh process (the
    peak resident set of this one is long set, and freed memory may stay resident)."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        steps[name]()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    command = [sys.executable, "-m", "benchmarks.model", "--probe-memory", name]
    command += ["--models", model, "--batch-sizes", str(batch_size), "--slots", str(args.slots)]
    command += ["--precision", args.precision, "--threads", str(args.threads), "--repeats", "3"]
    command += ["--malloc-tuned"] * args.malloc_tuned + ["--compile"] * args.compile
    probe = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise RuntimeError(f"memory probe {' '.join(command)} failed:\n{probe.stderr}")
    return float(probe.stdout.strip().splitlines()[-1])


def _measure_memory(args: argparse.Namespace, name: Implementation) -> float:
    """In this fresh process: growth of the peak resident set over one train step, MiB."""
    device = torch.device(args.device)
    net = _paired_models(args.models[0], device)[name]
    step = _train_step(net, _inputs(args.batch_sizes[0], args.slots, device), args)
    resident_kib = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - resident_kib) / 1024


def _status_kib(field: str) -> int:
    """A KiB field of /proc/self/status. VmHWM, unlike getrusage's ru_maxrss, starts afresh in
    a new program: Linux carries ru_maxrss over exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}: peak memory needs Linux")


if __name__ == "__main__":
    sys.exit(main())

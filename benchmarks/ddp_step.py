"""DDP scaling of ParticleNet's train step: N ranks against one, same per-rank batch.

Run under torchrun; every rank trains trainyard's ParticleNet on its own random jets (batch
``--batch-size`` per rank) in DistributedDataParallel, and rank 0 writes jets/s over all
ranks. gpu.sh runs it with one rank and then with every GPU, so the scaling efficiency is
(jets/s on N GPUs) / (N x jets/s on one). With ``--device cpu`` the ranks use gloo: a dry run
of the script on a machine without GPUs.

    torchrun --nproc_per_node 2 -m benchmarks.ddp_step --device cuda --out results/ddp-2.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch.nn.parallel import DistributedDataParallel

from benchmarks.environment import Environment, describe
from trainyard.models import build_particlenet, build_particlenet_lite

NUM_FEATURES = 7
SLOTS = 128
BUILDERS = {"particlenet": build_particlenet, "particlenet-lite": build_particlenet_lite}


class DdpResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    benchmark: str = "ddp_step"
    environment: Environment
    device: str
    model: str
    ranks: int
    batch_per_rank: int
    precision: str
    jets_per_s: float
    """All ranks together: the median over repeats."""
    passes: list[float]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = args.device == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    torch.manual_seed(0)
    model = BUILDERS[args.model](NUM_FEATURES, 2).to(device)
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    inputs = _random_jets(args.batch_size, device, seed=rank)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step() -> None:
        with autocast:
            logits = ddp(*inputs[:3])
        F.cross_entropy(logits.float(), inputs[3]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    passes = []
    for _ in range(args.warmup):
        step()
    for _ in range(args.repeats):
        _synchronize(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        _synchronize(device)
        passes.append(world * args.batch_size * args.steps / (time.perf_counter() - started))
    if rank == 0:
        result = DdpResult(
            environment=describe(),
            device=args.device,
            model=args.model,
            ranks=world,
            batch_per_rank=args.batch_size,
            precision=args.precision,
            jets_per_s=statistics.median(passes),
            passes=passes,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(result.model_dump_json(indent=2) + "\n")
        rate = f"{result.jets_per_s:,.0f} jets/s"
        print(f"DDP {args.model}, {world} rank(s) on {args.device}: {rate}")
    dist.destroy_process_group()
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", choices=sorted(BUILDERS), default="particlenet")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch-size", type=int, default=512, help="jets per rank")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed pass")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="result JSON file")
    return parser.parse_args(argv)


def _random_jets(
    batch: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points, features, a mask with 20-128 real particles per jet, and labels."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, 2, SLOTS, generator=generator)
    features = torch.randn(batch, NUM_FEATURES, SLOTS, generator=generator)
    counts = torch.randint(20, SLOTS + 1, (batch, 1, 1), generator=generator)
    mask = (torch.arange(SLOTS).view(1, 1, SLOTS) < counts).float()
    labels = torch.randint(0, 2, (batch,), generator=generator)
    return tuple(tensor.to(device) for tensor in (points, features, mask, labels))  # type: ignore[return-value]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    raise SystemExit(main())

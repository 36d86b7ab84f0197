"""A plain PyTorch DDP training script that trainyard runs as a script trial.

Nothing here is trainyard's model interface: a standard loop over synthetic jets-like data
(two classes of Gaussian blobs in 16 features), wrapped in DistributedDataParallel when
started with several ranks. Five trainyard.core calls make it searchable and resumable.

Run it by hand (local mode: metrics in trainyard-local/metrics.jsonl):
    python train.py --steps 100
    torchrun --nproc-per-node 2 train.py --steps 100
or as an ASHA search (from the repository's root):
    trainyard run examples/scripts/plain-ddp/experiment.yaml
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import trainyard.core

NUM_FEATURES = 16
DEFAULTS = {"lr": 0.01, "hidden": 32}
"""Hyperparameters of a run by hand; a trial's searched values replace them."""


def make_data(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping classes: signal is shifted by 0.5 in every feature."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (num,), generator=generator)
    features = torch.randn(num, NUM_FEATURES, generator=generator) + 0.5 * labels[:, None]
    return features, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--validate-every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    # torchrun's variables (trainyard sets the same ones): several ranks -> a process group.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    with trainyard.core.init(hparams=DEFAULTS) as ctx:
        train(ctx, args)
    if dist.is_initialized():
        dist.destroy_process_group()


def train(ctx: trainyard.core.Context, args: argparse.Namespace) -> None:
    rank, size = ctx.distributed.rank, ctx.distributed.size
    torch.manual_seed(0)  # the same initial weights on every rank
    model: nn.Module = nn.Sequential(
        nn.Linear(NUM_FEATURES, int(ctx.hparams["hidden"])),
        nn.ReLU(),
        nn.Linear(int(ctx.hparams["hidden"]), 2),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=float(ctx.hparams["lr"]), momentum=0.9)
    if dist.is_initialized():
        model = DistributedDataParallel(model)
    train_x, train_y = make_data(8192, seed=1)
    val_x, val_y = make_data(2048, seed=2)

    start = 0
    latest = ctx.checkpoint.latest()  # every rank reads the same checkpoint
    if latest is not None:
        state = torch.load(latest.path / "state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = latest.step
        print(f"rank {rank}: resuming after step {start}", flush=True)

    loss_fn = nn.CrossEntropyLoss()
    for step in range(start + 1, args.steps + 1):
        # Each rank trains on its own slice of the step's global batch.
        generator = torch.Generator().manual_seed(step)
        batch = torch.randint(0, len(train_x), (args.batch_size,), generator=generator)
        mine = batch[rank::size]
        loss = loss_fn(model(train_x[mine]), train_y[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ctx.report_training(step, {"loss": loss.item()})  # the chief's report is kept

        if step % args.validate_every == 0 or step == args.steps:
            with torch.no_grad():
                logits = model(val_x)
                val_loss = loss_fn(logits, val_y).item()
                accuracy = (logits.argmax(1) == val_y).float().mean().item()
            ctx.report_validation(step, {"val_loss": val_loss, "val_accuracy": accuracy})
            if ctx.distributed.is_chief:  # DDP replicas are equal: one rank writes
                folder = Path(tempfile.mkdtemp(prefix="checkpoint-"))
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                torch.save(state, folder / "state.pt")
                ctx.checkpoint.save(folder, step)  # moved into the trial's checkpoints
        if ctx.should_stop():  # ASHA's verdict, a pause or SIGTERM; every rank agrees
            print(f"rank {rank}: stopping at step {step}", flush=True)
            return


if __name__ == "__main__":
    main()

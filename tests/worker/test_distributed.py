"""Distributed pieces on CPU: strategy choice, batch split, validation shards, the collectives,
BatchNorm over the global batch and sharded checkpoints of two real gloo ranks
(torch.multiprocessing), read back on one."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import fully_shard

from tests.worker.staged import staged_jets
from trainyard.errors import CheckpointError, ConfigError
from trainyard.models import build_model
from trainyard.worker import parallel
from trainyard.worker.checkpoint import MODEL, OPTIMIZER, CheckpointManager
from trainyard.worker.distributed import (
    PeerFailedError,
    World,
    close_distributed,
    init_distributed,
    is_peer_failure,
)
from trainyard.worker.evaluation import ValidationShard
from trainyard.worker.sync_batchnorm import CpuSyncBatchNorm, convert_cpu_sync_batchnorm
from trainyard.worker.trained_state import load_trained_state, trained_state

MiB = 2**20


def test_training_memory_counts_params_grads_and_optimizer_state() -> None:
    model = nn.Linear(10, 10)  # 110 float32 parameters
    assert parallel.training_memory_bytes(model, "adamw") == 110 * 4 * (1 + 1 + 2)
    assert parallel.training_memory_bytes(model, "sgd") == 110 * 4 * (1 + 1 + 1)


def test_auto_shards_only_what_does_not_fit() -> None:
    def choose(requested: str, needed: int, world_size: int = 2) -> str:
        return parallel.choose_strategy(
            requested, world_size=world_size, needed_bytes=needed, budget_bytes=100 * MiB
        )

    assert choose("auto", 99 * MiB) == "ddp"
    assert choose("auto", 101 * MiB) == "fsdp"
    assert choose("ddp", 10_000 * MiB) == "ddp"
    assert choose("fsdp", 1) == "fsdp"
    assert choose("auto", 10_000 * MiB, world_size=1) == "single"


def test_fsdp_on_one_slot_warns_that_it_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        strategy = parallel.choose_strategy("fsdp", world_size=1, needed_bytes=1, budget_bytes=1)
    assert strategy == "single"
    assert "resources.strategy: fsdp has no effect on a trial with one slot" in caplog.text


def test_auto_picks_ddp_for_particlenet_on_cpu() -> None:
    model = build_model("particlenet", num_features=7, num_classes=2)
    budget = 0.5 * parallel.device_memory_bytes(torch.device("cpu"), num_local_ranks=2)
    needed = parallel.training_memory_bytes(model, "adamw")
    assert (
        parallel.choose_strategy("auto", world_size=2, needed_bytes=needed, budget_bytes=budget)
        == "ddp"
    )


def test_global_batch_must_split_evenly_and_the_error_names_both_numbers() -> None:
    assert parallel.rank_batch_size(256, 2, key="training.batch_size") == 128
    with pytest.raises(ConfigError) as raised:
        parallel.rank_batch_size(100, 3, key="hyperparameters.batch_size")
    message = str(raised.value)
    assert "`hyperparameters.batch_size`: the global batch of 100" in message
    assert "over the 3 ranks" in message and "choose a multiple of 3" in message


def test_lr_scale() -> None:
    assert parallel.lr_scale("none", 4) == 1.0
    assert parallel.lr_scale("linear", 4) == 4.0
    assert parallel.lr_scale("sqrt", 4) == 2.0


@pytest.mark.parametrize(
    ("num_jets", "world_size", "batch_size"),
    [(10, 3, 2), (7, 2, 4), (5, 2, 2), (10, 3, 3), (9, 1, 4)],
)
def test_validation_shards_score_every_jet_exactly_once(
    num_jets: int, world_size: int, batch_size: int, tmp_path: Path
) -> None:
    dataset = staged_jets(tmp_path, [i % 2 for i in range(num_jets)])
    seen: list[int] = []
    batches_run = set()
    for rank in range(world_size):
        shard = ValidationShard(
            dataset,
            batch_size=batch_size,
            world=World(rank=rank, size=world_size, local_size=world_size),
        )
        for _ in range(2):  # every validation covers the whole share again
            batches = list(shard)
            batches_run.add(len(batches))
            assert len(batches) == len(shard)
        for batch, num_real in batches:
            seen += batch.inputs["features"][:num_real, 0, 0].int().tolist()
    assert sorted(seen) == list(range(num_jets))
    assert len(batches_run) == 1, "FSDP needs the same number of forwards on every rank"


def test_peer_failures_are_told_apart_from_bugs() -> None:
    gloo = "[third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error: Connection reset"
    assert is_peer_failure(RuntimeError(gloo))
    assert is_peer_failure(PeerFailedError("combining stop flags failed"))
    assert not is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _train_one_step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = torch.randn(8, 4, generator=generator), torch.randint(0, 2, (8,))
    nn.functional.cross_entropy(model(inputs), labels).backward()
    optimizer.step()
    optimizer.zero_grad()


def _join_two_ranks(rank: int, port: int) -> World:
    """Join a gloo group of two ranks on 127.0.0.1:port as torchrun's variables would."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
    )
    return init_distributed()


def _two_ranks(rank: int, port: int, folder: str) -> None:
    """One of two gloo ranks: check the collectives, then write a sharded checkpoint."""
    world = _join_two_ranks(rank, port)
    try:
        assert world.any(rank == 1, False) == (True, False)
        assert world.sum(rank + 1.0) == 3.0
        assert world.broadcast({"spec": rank} if rank == 0 else None) == {"spec": 0}
        states = world.gather({"rank": torch.tensor([rank])})
        assert states is None if rank else [s["rank"].item() for s in states] == [0, 1]
        gathered = world.all_gather_array(np.arange(rank + 2, dtype=np.float64))
        assert gathered.tolist() == [0.0, 1.0, 0.0, 1.0, 2.0]

        model = _tiny_model()
        for layer in (model[0], model[3]):
            fully_shard(layer)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        _train_one_step(model, optimizer, seed=rank)
        parallel.sync_buffers(model)  # the ranks' BatchNorm statistics differ until now
        manager = CheckpointManager(Path(folder), keep=2, world=world)
        shards = trained_state(model, optimizer, sharded=True)
        manager.save(1, {"rank0": torch.tensor([rank])}, config={"c": 1}, shards=shards)
        whole = trained_state(model, optimizer, sharded=False)
        if world.is_primary:
            torch.save(whole, Path(folder) / "expected.pt")
    finally:
        close_distributed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_fsdp_ranks_checkpoint_and_one_rank_resumes(tmp_path: Path) -> None:
    mp.spawn(_two_ranks, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)

    manager = CheckpointManager(tmp_path, keep=2)
    loaded = manager.load_latest()
    assert loaded is not None and loaded.shards is not None
    assert (loaded.batches, loaded.world_size) == (1, 2)
    assert loaded.state["rank0"].tolist() == [0], "state.pt is rank 0's"
    meta = json.loads((loaded.path / "meta.json").read_text())
    assert set(meta["shards"]) >= {"shards/__0_0.distcp", "shards/__1_0.distcp"}

    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    load_trained_state(model, optimizer, loaded, manager)
    expected = torch.load(tmp_path / "expected.pt", weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[MODEL][name]), name
    moments = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments, expected[OPTIMIZER]["state"]["0.weight"]["exp_avg"])
    _train_one_step(model, optimizer, seed=5)  # and training goes on from there

    shard = loaded.path / "shards" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"__1_0\.distcp: sha256 .* \(corrupted\)"):
        manager.load_latest()


def _batchnorm_model() -> nn.Module:
    """A BatchNorm2d over (B, C, P, N) as in ParticleNet's EdgeConv, and a BatchNorm1d."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=1), nn.BatchNorm2d(4), nn.Flatten(2), nn.BatchNorm1d(4)
    )


def _batchnorm_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight jets, shifted away from 0 so a variance from E[x^2] - mean^2 would show its error."""
    generator = torch.Generator().manual_seed(1)
    inputs = 3.0 + torch.randn(8, 3, 5, 2, generator=generator)
    return inputs, torch.randn(8, 4, 10, generator=generator)


def _batchnorm_step(model: nn.Module, inputs: torch.Tensor, weights: torch.Tensor) -> dict:
    """One forward and backward in training mode; what came out, and every gradient."""
    inputs = inputs.clone().requires_grad_()
    outputs = model(inputs)
    (outputs * weights).sum().backward()
    return {
        "outputs": outputs.detach(),
        "input_grad": inputs.grad,
        **{f"{name}.grad": p.grad for name, p in model.named_parameters()},
        **{name: value for name, value in model.state_dict().items()},
    }


def _sync_batchnorm_rank(rank: int, port: int, folder: str) -> None:
    """Each rank normalises its half of the batch with the statistics of the whole."""
    _join_two_ranks(rank, port)
    try:
        model = parallel.apply_sync_batchnorm(_batchnorm_model(), torch.device("cpu"))
        assert sum(isinstance(m, CpuSyncBatchNorm) for m in model.modules()) == 2
        inputs, weights = _batchnorm_inputs()
        half = slice(4 * rank, 4 * rank + 4)
        # The whole batch's loss is the sum of the halves', so each rank's gradients are
        # summed (not averaged as DDP does) to compare with one rank.
        result = _batchnorm_step(model, inputs[half], weights[half])
        torch.save(result, Path(folder) / f"rank{rank}.pt")
    finally:
        close_distributed()


def test_cpu_sync_batchnorm_on_two_ranks_is_batchnorm_of_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_sync_batchnorm_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    inputs, weights = _batchnorm_inputs()
    whole = _batchnorm_step(_batchnorm_model(), inputs, weights)

    def close(name: str, got: torch.Tensor) -> None:
        # float32 sums in another order; the conv bias's gradient is 0 up to rounding (~1e-6).
        assert torch.allclose(got, whole[name], rtol=1e-5, atol=1e-5), name

    close("outputs", torch.cat([r["outputs"] for r in ranks]))
    close("input_grad", torch.cat([r["input_grad"] for r in ranks]))
    for name in whole:
        if name.endswith(".grad") and name != "input_grad":
            close(name, ranks[0][name] + ranks[1][name])
        elif name not in ("outputs", "input_grad"):
            close(name, ranks[0][name])
            assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between ranks"


def test_converted_batchnorm_keeps_its_state_and_uses_running_statistics_in_eval() -> None:
    model = _batchnorm_model()
    model(_batchnorm_inputs()[0])  # running statistics away from their initial values
    model.eval()
    inputs = _batchnorm_inputs()[0]
    expected, state = model(inputs), model.state_dict()
    converted = convert_cpu_sync_batchnorm(model)
    assert isinstance(converted[1], CpuSyncBatchNorm) and not converted[1].training
    assert converted.state_dict().keys() == state.keys()
    assert torch.equal(converted(inputs), expected)  # eval: no collective, same kernel

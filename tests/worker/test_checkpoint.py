"""Checkpoints must survive kills and damage, and must let a resumed run end bit-identical."""

import hashlib
import json
import logging
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler

from trainyard.errors import CheckpointError, NotFoundError
from trainyard.worker.checkpoint import (
    DATALOADER,
    FORMAT_VERSION,
    LR_SCHEDULER,
    MODEL,
    OPTIMIZER,
    RNG,
    TRAIN_STATE,
    CheckpointManager,
)
from trainyard.worker.rng import capture_rng_state, restore_rng_state

CONFIG = {"model": {"name": "mlp", "hidden": 16}, "optimizer": {"lr": 0.01}, "seed": 0}


def _build(seed: int, *, cosine_lambda: bool) -> tuple[nn.Module, torch.optim.Adam, LRScheduler]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler: LRScheduler
    if cosine_lambda:
        scheduler = LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / 10)))
    else:
        scheduler = CosineAnnealingLR(optimizer, T_max=10)
    return model, optimizer, scheduler


def _train_step(model: nn.Module, optimizer: torch.optim.Adam, scheduler: LRScheduler) -> None:
    """Draws from numpy, Python random and torch (dropout), so every RNG matters."""
    x = torch.from_numpy(np.random.standard_normal((8, 4)).astype(np.float32))
    y = x.sum(dim=1, keepdim=True) * random.uniform(0.5, 1.5) + 0.1 * torch.randn(8, 1)
    loss = F.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def _state(
    model: nn.Module, optimizer: torch.optim.Adam, scheduler: LRScheduler, step: int
) -> dict[str, Any]:
    return {
        MODEL: model.state_dict(),
        OPTIMIZER: optimizer.state_dict(),
        LR_SCHEDULER: scheduler.state_dict(),
        DATALOADER: {"batches_seen": step},
        TRAIN_STATE: {"step": step, "epoch": 0},
        RNG: capture_rng_state(),
    }


def _assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Deep equality, with torch.equal for tensors."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


def _save_steps(manager: CheckpointManager, *steps: int) -> None:
    for step in steps:
        manager.save(step, {"weights": torch.full((64,), float(step))}, config=CONFIG)


def _names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def test_round_trip_of_model_optimizer_scheduler_and_rng(tmp_path: Path) -> None:
    model, optimizer, scheduler = _build(0, cosine_lambda=False)
    for _ in range(2):
        _train_step(model, optimizer, scheduler)
    state = _state(model, optimizer, scheduler, 2)

    folder = CheckpointManager(tmp_path, keep=2).save(2, state, config=CONFIG)

    assert folder == tmp_path / "step-00000002"
    loaded = CheckpointManager(tmp_path, keep=2).load_latest()
    assert loaded is not None
    assert (loaded.path, loaded.batches, loaded.skipped) == (folder, 2, [])
    _assert_same(loaded.state, state)
    assert json.loads((folder / "config.json").read_text()) == CONFIG
    meta = json.loads((folder / "meta.json").read_text())
    data = (folder / "state.pt").read_bytes()
    assert meta["format_version"] == FORMAT_VERSION and meta["batches"] == 2
    assert (meta["layout"], meta["world_size"]) == ("file", 1)
    assert meta["state_bytes"] == len(data)
    assert meta["state_sha256"] == hashlib.sha256(data).hexdigest()
    assert "created" in meta


def test_state_file_loads_with_weights_only(tmp_path: Path) -> None:
    model, optimizer, scheduler = _build(0, cosine_lambda=True)
    _train_step(model, optimizer, scheduler)
    folder = CheckpointManager(tmp_path, keep=1).save(
        1, _state(model, optimizer, scheduler, 1), config=CONFIG
    )

    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)

    assert set(state) == {MODEL, OPTIMIZER, LR_SCHEDULER, DATALOADER, TRAIN_STATE, RNG}


def test_state_that_weights_only_would_refuse_is_not_saved(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpt", keep=1)
    state = {TRAIN_STATE: {"step": 3, "best_loss": np.float64(0.5)}}

    with pytest.raises(CheckpointError, match=r"state\['train_state'\]\['best_loss'\].*numpy"):
        manager.save(3, state, config=CONFIG)

    assert manager.list_checkpoints() == []
    assert not (tmp_path / "ckpt").exists()


def test_keep_prunes_to_the_newest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=2)

    _save_steps(manager, 10, 20, 30, 40)

    assert manager.list_checkpoints() == [tmp_path / "step-00000040", tmp_path / "step-00000030"]
    assert _names(tmp_path) == ["step-00000030", "step-00000040"]


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)


def test_saving_an_existing_step_replaces_it(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(10, {"v": torch.tensor(1)}, config=CONFIG)

    manager.save(10, {"v": torch.tensor(2)}, config=CONFIG)

    loaded = manager.load_latest()
    assert loaded is not None and loaded.state["v"].item() == 2
    assert _names(tmp_path) == ["step-00000010"]


def test_saving_an_earlier_step_drops_the_replaced_future(tmp_path: Path) -> None:
    """A run resumed from step 10 must not later resume from the abandoned step 30."""
    manager = CheckpointManager(tmp_path, keep=5)
    _save_steps(manager, 10, 20, 30)

    _save_steps(manager, 15)

    assert _names(tmp_path) == ["step-00000010", "step-00000015"]


def test_no_checkpoints_loads_none(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path / "absent", keep=1).load_latest() is None
    assert CheckpointManager(tmp_path, keep=1).load_latest() is None


def test_kill_mid_save_leaves_previous_checkpoint_and_is_cleaned_up(tmp_path: Path) -> None:
    """SIGKILL just before the rename: the half-done save must be invisible, then removed."""
    manager = CheckpointManager(tmp_path, keep=2)
    _save_steps(manager, 10)
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        import torch
        from trainyard.worker import checkpoint

        checkpoint.os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        manager = checkpoint.CheckpointManager(Path(sys.argv[1]), keep=2)
        manager.save(20, {"weights": torch.zeros(64)}, config={})
        """
    )

    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False)

    assert result.returncode == -9
    leftovers = [name for name in _names(tmp_path) if name.startswith(".step-00000020.tmp-")]
    assert len(leftovers) == 1 and (tmp_path / leftovers[0] / "state.pt").exists()
    assert manager.list_checkpoints() == [tmp_path / "step-00000010"]
    loaded = manager.load_latest()
    assert loaded is not None and loaded.batches == 10 and loaded.skipped == []

    _save_steps(manager, 20)

    assert _names(tmp_path) == ["step-00000010", "step-00000020"]


def test_truncated_state_is_refused_and_previous_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    _save_steps(manager, 10, 20)
    bad = tmp_path / "step-00000020" / "state.pt"
    size = bad.stat().st_size
    with open(bad, "r+b") as f:
        f.truncate(size // 2)

    with caplog.at_level(logging.WARNING, logger="trainyard.worker.checkpoint"):
        loaded = manager.load_latest()

    assert loaded is not None and loaded.batches == 10
    assert loaded.path == tmp_path / "step-00000010"
    assert loaded.skipped == [
        f"{bad}: size {size // 2} bytes, expected {size} (truncated); skipped"
    ]
    assert str(bad) in caplog.text
    with pytest.raises(CheckpointError, match=f"{bad}: size .* \\(truncated\\)"):
        manager.load(bad.parent)


def test_bit_flip_is_refused_by_checksum(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    _save_steps(manager, 10, 20)
    bad = tmp_path / "step-00000020" / "state.pt"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))

    loaded = manager.load_latest()

    assert loaded is not None and loaded.batches == 10
    assert len(loaded.skipped) == 1
    assert loaded.skipped[0].startswith(f"{bad}: sha256 ")
    assert "(corrupted)" in loaded.skipped[0]


def test_missing_meta_is_refused(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    _save_steps(manager, 10, 20)
    meta = tmp_path / "step-00000020" / "meta.json"
    meta.unlink()

    loaded = manager.load_latest()

    assert loaded is not None and loaded.batches == 10
    assert loaded.skipped == [f"{meta}: missing; skipped"]


def test_pickled_objects_are_refused_even_with_a_valid_checksum(tmp_path: Path) -> None:
    """A state.pt that needs unsafe unpickling is never loaded, whoever rewrote its meta."""
    manager = CheckpointManager(tmp_path, keep=1)
    folder = manager.save(10, {"v": torch.tensor(1)}, config=CONFIG)
    state_path, meta_path = folder / "state.pt", folder / "meta.json"
    torch.save({"v": np.float64(1.0)}, state_path)
    data = state_path.read_bytes()
    meta = json.loads(meta_path.read_text())
    meta.update(state_bytes=len(data), state_sha256=hashlib.sha256(data).hexdigest())
    meta_path.write_text(json.dumps(meta))

    with pytest.raises(CheckpointError) as raised:
        manager.load(folder)

    first_line = str(raised.value).splitlines()[0]
    assert first_line.startswith(f"{state_path}: torch.load(weights_only=True) failed: ")
    assert "numpy" in first_line


def test_all_corrupt_raises_naming_every_file(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    _save_steps(manager, 10, 20)
    truncated = tmp_path / "step-00000020" / "state.pt"
    truncated.write_bytes(truncated.read_bytes()[:100])
    garbled = tmp_path / "step-00000010" / "meta.json"
    garbled.write_text("{not json")

    with pytest.raises(CheckpointError) as raised:
        manager.load_latest()

    message = str(raised.value)
    assert f"{truncated}: size 100 bytes" in message
    assert f"{garbled}: unreadable or not valid JSON" in message
    assert f"Delete {tmp_path}" in message and "backup" in message


def test_load_of_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="step-00000099"):
        CheckpointManager(tmp_path, keep=1).load(tmp_path / "step-00000099")


def _draw() -> list[Any]:
    return [
        random.random(),
        random.gauss(0, 1),
        np.random.standard_normal(3).tolist(),
        int(np.random.randint(0, 10**6)),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    ]


def test_rng_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.gauss(0, 1)  # leave cached Gaussians, so those parts of the state matter too
    np.random.standard_normal()
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    first = _draw()

    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))

    assert _draw() == first


def test_incomplete_rng_state_is_refused() -> None:
    state = capture_rng_state()
    del state["numpy"]

    with pytest.raises(CheckpointError, match="RNG state"):
        restore_rng_state(state)


def test_resumed_run_ends_bit_identical(tmp_path: Path) -> None:
    """Train 10 steps straight; separately, resume from the step-5 checkpoint into freshly
    built objects with scrambled global RNGs and train steps 6-10; weights must be equal."""
    manager = CheckpointManager(tmp_path, keep=2)
    random.seed(0)
    np.random.seed(0)
    model, optimizer, scheduler = _build(0, cosine_lambda=True)
    for step in range(1, 11):
        _train_step(model, optimizer, scheduler)
        if step == 5:
            manager.save(step, _state(model, optimizer, scheduler, step), config=CONFIG)
    uninterrupted = model.state_dict()

    random.seed(123)
    np.random.seed(123)
    model, optimizer, scheduler = _build(123, cosine_lambda=True)
    loaded = manager.load_latest()
    assert loaded is not None
    model.load_state_dict(loaded.state[MODEL])
    optimizer.load_state_dict(loaded.state[OPTIMIZER])
    scheduler.load_state_dict(loaded.state[LR_SCHEDULER])
    restore_rng_state(loaded.state[RNG])
    for _ in range(loaded.state[TRAIN_STATE]["step"] + 1, 11):
        _train_step(model, optimizer, scheduler)

    resumed = model.state_dict()
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, resumed[name]), name

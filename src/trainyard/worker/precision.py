"""Mixed precision as one object, so the training step reads the same with and without AMP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

GRAD_SCALER = "grad_scaler"


@dataclass
class Precision:
    """bf16 autocast (no scaler needed), fp16 autocast with a GradScaler, or full fp32."""

    name: str
    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    @classmethod
    def choose(cls, amp: str, device: torch.device) -> Precision:
        """auto: bf16 on GPUs that support it, fp32 elsewhere (CPU autocast is slower here)."""
        on_gpu = device.type == "cuda"
        if amp == "auto":
            amp = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "off"
        if amp == "off":
            return cls("fp32", device, None, None)
        if amp == "bf16":
            return cls("bf16", device, torch.bfloat16, None)
        scaler = torch.amp.GradScaler(device.type, enabled=on_gpu)
        return cls("fp16", device, torch.float16, scaler)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before gradient clipping, so the norm is of the true gradients."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {GRAD_SCALER: self.scaler.state_dict()} if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and GRAD_SCALER in state:
            self.scaler.load_state_dict(state[GRAD_SCALER])

"""What the packing benchmark records and how it summarises it: passes -> figures -> Markdown.

A pass is one timed run of `steps` optimizer steps, either of one trial alone (`solo`) or of a
pack of K trials (`packed`). Its throughput is in trial-batches per second: K * steps / time.
One trial at a time does the same work per trial whatever K is, so the solo figure is the
"one trial at a time" rate for every K, and a pack's speed-up is packed / solo.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from benchmarks.results_files import cpu_model


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Record):
    device: str
    precision: Literal["fp32", "bf16"]
    batch_size: int
    particles: int
    ks: list[int]
    models: list[str]
    steps: int
    warmup_steps: int
    repeats: int
    threads: int
    dropout: float = 0.0
    """Every trial's dropout rate."""
    optimizer: str = "adamw, each member its own lr"
    data: str = "random jets on the device, each trial its own batches"


class Pass(_Record):
    model: str
    mode: Literal["solo", "packed"]
    k: int
    repeat: int
    seconds: float
    trial_batches_per_s: float
    peak_memory_mib: float | None
    """CUDA only: peak memory allocated during the pass."""
    load_average_before: float


class Figure(_Record):
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Figure:
        return cls(median=statistics.median(values), min=min(values), max=max(values))

    def text(self) -> str:
        return f"{_number(self.median)} ({_number(self.min)}-{_number(self.max)})"


def _number(value: float) -> str:
    """Three significant digits, so slow CPU rates (0.13) keep their resolution."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


class Row(_Record):
    model: str
    k: int
    packed: Figure
    """trial-batches/s of the pack of K."""
    solo: Figure
    """trial-batches/s of one trial at a time."""
    speedup: float
    """median packed / median solo."""
    peak_memory_mib: float | None


class Machine(_Record):
    cpu_model: str
    cores: int | None
    python: str
    torch: str
    device_name: str
    cuda: str | None
    """The CUDA version torch was built with."""


class PackingResult(_Record):
    benchmark: Literal["packing"] = "packing"
    date: str
    machine: Machine
    load_average_before: Figure
    load_average_at_end: tuple[float, float, float]
    settings: Settings
    rows: list[Row]
    passes: list[Pass]


def summarise(
    settings: Settings, passes: list[Pass], *, date: str, device: torch.device
) -> PackingResult:
    rows = []
    for model in settings.models:
        solo = Figure.of([p.trial_batches_per_s for p in passes if _is(p, model, "solo")])
        for k in settings.ks:
            mine = [p for p in passes if _is(p, model, "packed") and p.k == k]
            memory = [p.peak_memory_mib for p in mine if p.peak_memory_mib is not None]
            packed = Figure.of([p.trial_batches_per_s for p in mine])
            rows.append(
                Row(
                    model=model,
                    k=k,
                    packed=packed,
                    solo=solo,
                    speedup=packed.median / solo.median,
                    peak_memory_mib=max(memory) if memory else None,
                )
            )
    return PackingResult(
        date=date,
        machine=machine(device),
        load_average_before=Figure.of([p.load_average_before for p in passes]),
        load_average_at_end=tuple(round(x, 2) for x in os.getloadavg()),
        settings=settings,
        rows=rows,
        passes=passes,
    )


def _is(p: Pass, model: str, mode: str) -> bool:
    return p.model == model and p.mode == mode


def machine(device: torch.device) -> Machine:
    on_cuda = device.type == "cuda"
    return Machine(
        cpu_model=cpu_model(),
        cores=os.cpu_count(),
        python=platform.python_version(),
        torch=torch.__version__,
        device_name=torch.cuda.get_device_name(device) if on_cuda else "cpu",
        cuda=torch.version.cuda if on_cuda else None,
    )


def write(result: PackingResult, out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(result.model_dump_json(indent=2) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


def markdown(result: PackingResult) -> str:
    m, s, load = result.machine, result.settings, result.load_average_before
    memory = "peak MiB" if s.device.startswith("cuda") else ""
    lines = [
        "# Packing benchmark",
        "",
        f"{result.date}; {m.device_name} ({m.cpu_model}, {m.cores} cores); torch {m.torch}"
        + (f", CUDA {m.cuda}" if m.cuda else "")
        + f". 1-minute load average before the passes: median {load.median:.2f}, range "
        f"{load.min:.2f}-{load.max:.2f}; at the end {list(result.load_average_at_end)}.",
        "",
        f"{s.precision}, batch {s.batch_size} jets of {s.particles} particle slots per trial, "
        f"{s.optimizer}, dropout {s.dropout:g}; {s.data}; {s.threads} CPU threads. "
        "Each figure: trial-batches per "
        f"second over {s.steps} steps after {s.warmup_steps} warm-up steps, median of "
        f"{s.repeats} passes (min-max). Solo: one trial at a time (the ordinary loop); "
        "packed: K trials in one `PackedModels` step.",
        "",
        f"| model | K | packed | one at a time | packed / one at a time | {memory} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result.rows:
        peak = f"{row.peak_memory_mib:,.0f}" if row.peak_memory_mib is not None else ""
        lines.append(
            f"| {row.model} | {row.k} | {row.packed.text()} | {row.solo.text()} | "
            f"{row.speedup:.2f}x | {peak} |"
        )
    return "\n".join([*lines, ""])

"""The model benchmark's record: passes, figures with their spread, ratios, goals, Markdown.

model.py measures and hands its passes here; this module summarises them into typed records
and writes benchmarks/results/<tag>.json (every pass, the machine) and <tag>.md (the table).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from benchmarks.loader_report import Figure, LoadAverage, Machine, _machine

GOALS = {"cpu": 1.7, "cuda": 2.0}
"""trainyard's ParticleNet train step should be at least this many times weaver-core's
(issue 12), by device."""

Implementation = Literal["weaver-core", "trainyard"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Pass(_Record):
    """``steps`` timed train steps (forward, backward, AdamW step) of one implementation."""

    implementation: Implementation
    jets_per_s: float
    seconds_per_step: float
    user_s_per_step: float
    """CPU time in user mode per step, whole process (RUSAGE_SELF), all threads."""
    system_s_per_step: float
    """CPU time in the kernel per step: page faults, mmap/munmap of large tensors, ..."""
    minor_faults_per_step: float
    load_average: float
    """The 1-minute load average just before the pass: a busy machine slows every model."""


class Case(_Record):
    """One model variant at one batch size: its passes, memory and eval parity."""

    model: str
    batch_size: int
    parameters: int
    eval_max_abs_diff: float
    """max |ours - weaver| of the eval-mode logits on the benchmark's inputs, same weights."""
    peak_memory_mib: dict[Implementation, float]
    """CPU: growth of the peak resident set over the first train step in a fresh process;
    CUDA: growth of torch.cuda.max_memory_allocated over one train step."""
    passes: list[Pass]

    @model_validator(mode="before")
    @classmethod
    def _recompute_ratio(cls, data: Any) -> Any:
        """A saved result carries the ratio it computed; reading it back computes it again."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if key != "ratio"}
        return data

    def figure(self, implementation: Implementation) -> Figure:
        rates = [run.jets_per_s for run in self.passes if run.implementation == implementation]
        return Figure(median=statistics.median(rates), min=min(rates), max=max(rates))

    def median(self, implementation: Implementation, field: str) -> float:
        return statistics.median(
            getattr(run, field) for run in self.passes if run.implementation == implementation
        )

    @computed_field
    @property
    def ratio(self) -> float:
        """trainyard's median jets/s over weaver-core's."""
        return self.figure("trainyard").median / self.figure("weaver-core").median


class Settings(_Record):
    device: str
    precision: Literal["fp32", "bf16"]
    compile: bool
    threads: int
    batch_sizes: list[int]
    models: list[str]
    slots: int
    steps: int
    warmup: int
    repeats: int
    malloc_tuned: bool
    quick: bool
    multiplicities: str
    optimizer: str


class ModelResult(_Record):
    benchmark: Literal["model"] = "model"
    date: str
    machine: Machine
    load_average: LoadAverage
    settings: Settings
    goal: float
    cases: list[Case]


def summarise(settings: Settings, cases: list[Case]) -> ModelResult:
    """The result record, with the machine and the load it ran under."""
    loads = [run.load_average for case in cases for run in case.passes]
    return ModelResult(
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        machine=_machine(),
        load_average=LoadAverage(
            median=statistics.median(loads),
            min=min(loads),
            max=max(loads),
            at_end=tuple(round(x, 2) for x in os.getloadavg()),
        ),
        settings=settings,
        goal=GOALS["cuda" if settings.device.startswith("cuda") else "cpu"],
        cases=cases,
    )


def write(result: ModelResult, out: Path, tag: str) -> Path:
    """Write <tag>.json and <tag>.md into ``out``; returns the Markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(result.model_dump_json(indent=2) + "\n")
    table = out / f"{tag}.md"
    table.write_text(markdown(result))
    return table


def markdown(result: ModelResult) -> str:
    machine, load, settings = result.machine, result.load_average, result.settings
    header = [
        "model",
        "batch",
        "weaver-core jets/s",
        "trainyard jets/s",
        "trainyard / weaver-core",
        f"goal (ParticleNet, {settings.device})",
        "peak memory MiB (weaver / ours)",
        "user + system s/step (weaver / ours)",
        "minor faults/step (weaver / ours)",
        "eval max abs diff",
    ]
    malloc = "glibc malloc tuned (mallopt: no mmap, no trim)" if settings.malloc_tuned else ""
    lines = [
        "# Model benchmark: ParticleNet train step, trainyard against weaver-core",
        "",
        f"{result.date}; {machine.cpu_model}, {machine.cores} cores, {machine.memory_gib} GiB; "
        f"torch {machine.torch}, weaver-core {machine.weaver_core}; device {settings.device}, "
        f"{settings.threads} threads, {settings.precision}"
        f"{', torch.compile' if settings.compile else ''}{', ' + malloc if malloc else ''}. "
        f"Load average (1 min) before the passes: median {load.median:.2f}, range "
        f"{load.min:.2f}-{load.max:.2f}; at the end {list(load.at_end)}.",
        "",
        f"Train step = forward, cross-entropy, backward, {settings.optimizer} step, same "
        f"weights (weaver-core's state_dict loaded into ours), same inputs ({settings.slots} "
        f"particle slots, {settings.multiplicities}). jets/s: median of {settings.repeats} "
        f"passes of {settings.steps} step(s) after {settings.warmup} warm-up step(s), "
        "(min-max); the two implementations alternate pass by pass. CPU times and minor page "
        "faults per step are medians over the passes (getrusage, whole process).",
        "",
        "| " + " | ".join(header) + " |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        *("| " + " | ".join(_cells(case, result.goal)) + " |" for case in result.cases),
        "",
    ]
    return "\n".join(lines)


def _cells(case: Case, goal: float) -> list[str]:
    if case.model == "particlenet":
        verdict = f">= {goal:.1f}x: " + ("met" if case.ratio >= goal else "**not met**")
    else:
        verdict = "-"

    def both(field: str, spec: str) -> str:
        return " / ".join(
            format(case.median(side, field), spec) for side in ("weaver-core", "trainyard")
        )

    cpu = " / ".join(
        f"{case.median(side, 'user_s_per_step'):.2f} + "
        f"{case.median(side, 'system_s_per_step'):.2f}"
        for side in ("weaver-core", "trainyard")
    )
    memory = case.peak_memory_mib
    return [
        case.model,
        str(case.batch_size),
        _rate(case.figure("weaver-core")),
        _rate(case.figure("trainyard")),
        f"{case.ratio:.2f}x",
        verdict,
        f"{memory['weaver-core']:,.0f} / {memory['trainyard']:,.0f}",
        cpu,
        both("minor_faults_per_step", ",.0f"),
        f"{case.eval_max_abs_diff:.1e}",
    ]


def _rate(figure: Figure) -> str:
    return f"{figure.median:,.1f} ({figure.min:,.1f}-{figure.max:,.1f})"

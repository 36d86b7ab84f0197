"""The loader benchmark's record: passes, figures with their spread, ratios, goals, Markdown.

loader.py measures and hands its passes here; this module summarises them into typed records
and writes benchmarks/results/loader.json (every pass, the machine) and loader.md (the table).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, computed_field

from benchmarks.results_files import cpu_model

WEAVER_GOAL = 10.0
"""Our loader should be at least this many times as fast as weaver-core's (issue 3)."""
RAW_GOAL = 0.5
"""...and reach at least this share of a raw sequential read of the same bytes (issue 3, 8)."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Pass(_Record):
    """One timed pass of one measurement."""

    jets_per_s: float
    load_average: float
    """The 1-minute load average just before the pass: a busy machine slows every loader."""
    seconds: float | None = None
    staging_s: float | None = None
    """Our first epoch: the part of ``seconds`` spent staging."""
    resident_before: float | None = None
    """Cold passes: the share of the read files' bytes still in the page cache at the start."""


class Passes(_Record):
    """Every pass of every measurement; each list holds at least ``--repeats`` passes."""

    ours_first_epoch: list[Pass]
    weaver_streaming: list[Pass]
    weaver_streaming_by_files: list[Pass]
    ours_later_epochs: list[Pass]
    weaver_in_memory: list[Pass]
    ours_cold: list[Pass]
    raw_cold: list[Pass]
    ours_warm: list[Pass]
    raw_warm: list[Pass]

    def every(self) -> list[Pass]:
        return [run for name in type(self).model_fields for run in getattr(self, name)]


class Figure(_Record):
    """One figure over its passes, in jets/s: the median and the range (min-max)."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, passes: list[Pass]) -> Figure:
        rates = [run.jets_per_s for run in passes]
        return cls(median=statistics.median(rates), min=min(rates), max=max(rates))

    def text(self) -> str:
        return f"{self.median:,.0f} ({self.min:,.0f}-{self.max:,.0f})"


class Comparison(_Record):
    """Our loader against a reference on the same kind of epoch, with the goal for the ratio."""

    epoch: str
    ours: Figure
    reference: str
    theirs: Figure
    goal: float
    unit: Literal["x", "%"]

    @computed_field
    @property
    def ratio(self) -> float:
        """Median over median."""
        return self.ours.median / self.theirs.median

    @computed_field
    @property
    def goal_met(self) -> bool:
        return self.ratio >= self.goal

    def cells(self) -> list[str]:
        if self.unit == "x":
            ratio, goal = f"{self.ratio:.1f}x", f">= {self.goal:.0f}x"
        else:
            ratio, goal = f"{self.ratio:.0%}", f">= {self.goal:.0%}"
        verdict = "met" if self.goal_met else "**not met**"
        return [
            self.epoch,
            self.ours.text(),
            f"{self.reference}: {self.theirs.text()}",
            ratio,
            f"{goal}: {verdict}",
        ]


class WeaverMode(_Record):
    """How weaver-core's SimpleIterDataset fetches, as its train.py options set it."""

    fetch_by_files: bool
    fetch_step: int | float
    in_memory: bool
    infinity_mode: bool


class Settings(_Record):
    data_config: str
    batch_size: int
    repeats: int
    prefetch: int
    gather_threads: int
    weaver_workers: int
    weaver_modes: dict[str, WeaverMode]
    raw_read_bytes: int


class DatasetInfo(_Record):
    source: str
    generation_s: float | None
    jets: int
    files: int
    parquet_bytes: int
    staged_bytes: int
    staged_bytes_per_jet: int


class Machine(_Record):
    cpu_model: str
    cores: int | None
    memory_gib: float
    python: str
    torch: str
    numpy: str
    weaver_core: str
    cuda: bool


class LoadAverage(_Record):
    """The 1-minute load average before the passes, and the three load averages at the end."""

    median: float
    min: float
    max: float
    at_end: tuple[float, float, float]


class LoaderResult(_Record):
    benchmark: Literal["loader"] = "loader"
    date: str
    machine: Machine
    load_average: LoadAverage
    dataset: DatasetInfo
    settings: Settings
    cold_how: str = "posix_fadvise(POSIX_FADV_DONTNEED) on the files read, before each cold pass"
    cold_note: str = "on a VM the host may still cache the disk; cold means the guest's cache"
    max_resident_share_before_cold: float
    median_staging_s: float
    comparisons: list[Comparison]
    passes: Passes


def summarise(settings: Settings, dataset: DatasetInfo, passes: Passes) -> LoaderResult:
    """Figures, ratios and goals from the passes, with the machine and its load."""
    first, later = passes.ours_first_epoch, passes.ours_later_epochs
    comparisons = [
        _against_weaver(
            "first epoch, staging included",
            first,
            "streaming, fetch_step 0.01",
            passes.weaver_streaming,
        ),
        _against_weaver(
            "first epoch, staging included",
            first,
            "streaming, fetch_by_files, fetch_step 1",
            passes.weaver_streaming_by_files,
        ),
        _against_weaver("later epochs", later, "in_memory", passes.weaver_in_memory),
        _against_raw("an epoch, cold page cache", passes.ours_cold, passes.raw_cold),
        _against_raw("an epoch, warm page cache", passes.ours_warm, passes.raw_warm),
    ]
    every = passes.every()
    loads = [run.load_average for run in every]
    at_end = tuple(round(x, 2) for x in os.getloadavg())
    return LoaderResult(
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        machine=_machine(),
        load_average=LoadAverage(
            median=statistics.median(loads), min=min(loads), max=max(loads), at_end=at_end
        ),
        dataset=dataset,
        settings=settings,
        max_resident_share_before_cold=max(
            run.resident_before for run in every if run.resident_before is not None
        ),
        median_staging_s=statistics.median(
            run.staging_s for run in passes.ours_first_epoch if run.staging_s is not None
        ),
        comparisons=comparisons,
        passes=passes,
    )


def _against_weaver(epoch: str, ours: list[Pass], mode: str, theirs: list[Pass]) -> Comparison:
    return Comparison(
        epoch=epoch,
        ours=Figure.of(ours),
        reference=f"weaver-core {mode}",
        theirs=Figure.of(theirs),
        goal=WEAVER_GOAL,
        unit="x",
    )


def _against_raw(epoch: str, ours: list[Pass], raw: list[Pass]) -> Comparison:
    return Comparison(
        epoch=epoch,
        ours=Figure.of(ours),
        reference="raw read",
        theirs=Figure.of(raw),
        goal=RAW_GOAL,
        unit="%",
    )


def _machine() -> Machine:
    return Machine(
        cpu_model=cpu_model(),
        cores=os.cpu_count(),
        memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=np.__version__,
        weaver_core=metadata.version("weaver-core"),
        cuda=torch.cuda.is_available(),
    )


def write(result: LoaderResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(result.model_dump_json(indent=2) + "\n")
    (out / "loader.md").write_text(markdown(result))


def markdown(result: LoaderResult) -> str:
    machine, data, load = result.machine, result.dataset, result.load_average
    settings = result.settings
    header = ["epoch", "trainyard StagedLoader", "against", "trainyard / against", "goal"]
    lines = [
        "# Loader benchmark",
        "",
        f"{result.date}; {machine.cpu_model}, {machine.cores} cores, {machine.memory_gib} GiB; "
        f"torch {machine.torch}, weaver-core {machine.weaver_core}. Load average (1 min) "
        f"before the passes: median {load.median:.2f}, range {load.min:.2f}-{load.max:.2f}; "
        f"at the end {list(load.at_end)}.",
        "",
        f"{data.jets:,} jets in {data.files} Parquet file(s) ({data.source}), data config "
        f"`{settings.data_config}`, batch {settings.batch_size}; staged "
        f"{data.staged_bytes / 1e9:.2f} GB ({data.staged_bytes_per_jet} B/jet), staging took "
        f"{result.median_staging_s:.1f} s (median). jets/s: median of {settings.repeats} "
        "passes (min-max). weaver-core: "
        f"{settings.weaver_workers} DataLoader workers, built as its train.py builds them; "
        f"ours: prefetch {settings.prefetch}, {settings.gather_threads} gather threads.",
        "",
        "| " + " | ".join(header) + " |",
        "| --- | ---: | ---: | ---: | --- |",
        *("| " + " | ".join(comparison.cells()) + " |" for comparison in result.comparisons),
        "",
        "First epochs start from Parquet files dropped from the page cache and are timed from "
        "the start to the last batch: staging into an empty cache plus one epoch for ours, "
        "worker start-up and every fetch for weaver-core's streaming modes. Later epochs: "
        "ours, the epochs after a first one (page cache warm); weaver-core in_memory "
        "(fetch_step 1, steps per epoch = jets / batch, as its train.py runs it), the epochs "
        "after the one that loads the files into its workers. The raw read reads the loader's "
        "shard files front to back with "
        f"{settings.raw_read_bytes >> 20} MiB reads. Cold: {result.cold_how}; at most "
        f"{result.max_resident_share_before_cold:.1%} of the bytes were still cached; "
        f"{result.cold_note}.",
        "",
    ]
    return "\n".join(lines)

"""The short table that benchmarks/gpu.sh prints last, from the results it wrote.

Reads every result file in the folder (model-*, packing-*, loader-*, ddp-*.json), parsed with
the benchmark's own record types, and writes gpu.json (the rows) and gpu.md (the table): for
each measurement, ours against the reference it is compared with, and the ratio.

    python -m benchmarks.gpu_summary benchmarks/results/gpu
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from benchmarks.ddp_step import DdpResult
from benchmarks.environment import Environment
from benchmarks.loader_device import LoaderDeviceResult
from benchmarks.model_report import ModelResult
from benchmarks.packing_report import PackingResult


class Row(BaseModel):
    """One line of the table: ours against a reference, same device and run."""

    model_config = ConfigDict(frozen=True)

    benchmark: str
    setting: str
    ours: float
    reference: float
    reference_name: str
    unit: str
    ratio: float


class GpuSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    environment: Environment | None
    rows: list[Row]
    not_run: list[str]


def summarise(folder: Path) -> GpuSummary:
    rows: list[Row] = []
    not_run: list[str] = []
    for path in sorted(folder.glob("model-*.json")):
        rows += _model_rows(ModelResult.model_validate_json(path.read_text()))
    for path in sorted(folder.glob("packing-*.json")):
        rows += _packing_rows(PackingResult.model_validate_json(path.read_text()))
    for path in sorted(folder.glob("loader-*.json")):
        loader = LoaderDeviceResult.model_validate_json(path.read_text())
        rows += _loader_rows(loader)
        not_run += [
            f"loader {entry.path}: {entry.not_measured_because}"
            for entry in loader.paths
            if entry.measured is None
        ]
    rows += _ddp_rows(
        [DdpResult.model_validate_json(p.read_text()) for p in folder.glob("ddp-*.json")]
    )
    not_run += [line for p in folder.glob("*skipped.txt") for line in p.read_text().splitlines()]
    environment_file = folder / "environment.json"
    environment = (
        Environment.model_validate_json(environment_file.read_text())
        if environment_file.is_file()
        else None
    )
    return GpuSummary(environment=environment, rows=rows, not_run=not_run)


def _model_rows(result: ModelResult) -> list[Row]:
    settings = result.settings
    variant = settings.precision + (", compiled" if settings.compile else "")
    return [
        Row(
            benchmark="model train step",
            setting=f"{case.model}, batch {case.batch_size}, {variant}",
            ours=case.figure("trainyard").median,
            reference=case.figure("weaver-core").median,
            reference_name="weaver-core",
            unit="jets/s",
            ratio=case.ratio,
        )
        for case in result.cases
    ]


def _packing_rows(result: PackingResult) -> list[Row]:
    """The best K of each model: what `resources.pack: auto` would choose on this device."""
    settings = result.settings
    rows = []
    for model in settings.models:
        best = max((row for row in result.rows if row.model == model), key=lambda r: r.speedup)
        rows.append(
            Row(
                benchmark="trial packing",
                setting=f"{model}, batch {settings.batch_size}, {settings.precision}, K={best.k}",
                ours=best.packed.median,
                reference=best.solo.median,
                reference_name="one trial at a time",
                unit="trial-batches/s",
                ratio=best.speedup,
            )
        )
    return rows


def _loader_rows(result: LoaderDeviceResult) -> list[Row]:
    measured = {entry.path: entry.measured for entry in result.paths if entry.measured}
    ceiling = measured.get("copy")
    rows = []
    for path in ("pinned", "kvikio"):
        if path in measured and ceiling is not None:
            rows.append(
                Row(
                    benchmark="loader to GPU",
                    setting=f"{path}, batch {result.batch_size}",
                    ours=measured[path].jets_per_s,
                    reference=ceiling.jets_per_s,
                    reference_name="host-to-device copy of the same bytes",
                    unit="jets/s",
                    ratio=measured[path].jets_per_s / ceiling.jets_per_s,
                )
            )
    return rows


def _ddp_rows(results: list[DdpResult]) -> list[Row]:
    single = {(r.model, r.precision): r for r in results if r.ranks == 1}
    rows = []
    for result in results:
        one = single.get((result.model, result.precision))
        if result.ranks == 1 or one is None:
            continue
        rows.append(
            Row(
                benchmark="DDP scaling",
                setting=(
                    f"{result.model}, {result.ranks} ranks, batch {result.batch_per_rank} per rank"
                ),
                ours=result.jets_per_s,
                reference=result.ranks * one.jets_per_s,
                reference_name=f"{result.ranks} x one rank",
                unit="jets/s",
                ratio=result.jets_per_s / (result.ranks * one.jets_per_s),
            )
        )
    return rows


def markdown(summary: GpuSummary) -> str:
    env = summary.environment
    if env is None:
        heading = "machine not recorded"
    else:
        gpu = env.gpus[0].name if env.gpus else "no GPU"
        heading = (
            f"{gpu} x{len(env.gpus)}, driver {env.driver}, torch {env.torch} "
            f"(CUDA {env.torch_cuda}), {env.cores} cores, {env.date}"
        )
    lines = [
        "# GPU benchmarks",
        "",
        heading,
        "",
        "| benchmark | setting | ours | reference | ratio |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in summary.rows:
        lines.append(
            f"| {row.benchmark} | {row.setting} | {row.ours:,.1f} {row.unit} "
            f"| {row.reference:,.1f} ({row.reference_name}) | {row.ratio:.2f}x |"
        )
    lines += [f"- not run: {reason}" for reason in summary.not_run]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m benchmarks.gpu_summary RESULTS_FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    summary = summarise(folder)
    (folder / "gpu.json").write_text(summary.model_dump_json(indent=2) + "\n")
    table = markdown(summary)
    (folder / "gpu.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

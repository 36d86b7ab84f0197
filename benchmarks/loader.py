"""Loader benchmark: weaver-core's loader vs trainyard's staged loader vs a raw read of the bytes.

All three read the same jets with the same weaver data config, a TopLandscape top_kin-style
one (2 points, 7 features, 1 mask channel, 128 slots, constant padding) written to a temporary
folder; trainyard stages it once with its weaver-compatible pipeline (WeaverConfigSource):

    weaver  weaver-core's SimpleIterDataset + torch DataLoader as weaver's train.py builds
            them (fetch_step 0.01, in_memory off, persistent workers), from the Parquet files;
            also with fetch_by_files and fetch_step 1 (whole files per fetch, its fastest mode)
    ours    StagedLoader over the staged shards (shuffled, full batches, prefetch thread)
    raw     every staged file read front to back with 8 MiB reads: the I/O limit

Cold passes start after posix_fadvise(POSIX_FADV_DONTNEED) on every file read, and the share of
bytes still in the page cache (mincore) is recorded; warm passes follow a cold one. Results go
to benchmarks/results/loader.json and loader.md.

    .venv/bin/python benchmarks/loader.py [--jets 200000] [--files F ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trainyard.data.reader import resolve_files
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.loader import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_WINDOW_BLOCKS,
    WEAVER_PARTICLENET_FIELDS,
    StagedLoader,
)
from trainyard.data.staged.sources import WeaverConfigSource, stage_source
from trainyard.datasets.toy import write_toy_dataset

RESULTS_DIR = Path(__file__).parent / "results"
RAW_READ_BYTES = 8 << 20
PREFETCH = 4
WEAVER_CONFIG = """\
# TopLandscape top_kin.yaml inputs, with constant padding so that padded slots match trainyard's.
selection: null
new_variables:
  part_mask: ak.ones_like(part_energy)
  part_pt: np.hypot(part_px, part_py)
  part_pt_log: np.log(part_pt)
  part_e_log: np.log(part_energy)
  part_logptrel: np.log(part_pt/jet_pt)
  part_logerel: np.log(part_energy/jet_energy)
  part_deltaR: np.hypot(part_deta, part_dphi)
  jet_isTop: label
  jet_isQCD: 1-label
preprocess: {method: manual, data_fraction: 0.5}
inputs:
  pf_points:
    length: 128
    pad_mode: constant
    vars: [[part_deta, null], [part_dphi, null]]
  pf_features:
    length: 128
    pad_mode: constant
    vars:
      - [part_pt_log, 1.7, 0.7]
      - [part_e_log, 2.0, 0.7]
      - [part_logptrel, -4.7, 0.7]
      - [part_logerel, -4.7, 0.7]
      - [part_deltaR, 0.2, 4.0]
      - [part_deta, null]
      - [part_dphi, null]
  pf_mask:
    length: 128
    pad_mode: constant
    vars: [[part_mask, null]]
labels: {type: simple, value: [jet_isTop, jet_isQCD]}
observers: [jet_mass]
"""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trainyard-loader-bench-") as temp:
        workdir = Path(temp)
        files, generation = _input_files(args, workdir)
        config_path = workdir / "top_kin_constant_pad.yaml"
        config_path.write_text(WEAVER_CONFIG)
        yaml.safe_load(config_path.read_text())  # fail here, not inside a weaver worker

        print(f"staging {len(files)} file(s) with the same data config ...", flush=True)
        started = time.perf_counter()
        dataset = stage_source(WeaverConfigSource(files, config_path), workdir / "cache")
        staging_s = time.perf_counter() - started
        staged_files = sorted(dataset.root.glob("*.npy"))

        passes: dict[str, list[dict[str, float]]] = {"raw": [], "ours": []}
        for repeat in range(args.repeats):
            print(f"raw read and staged loader, pass {repeat + 1}/{args.repeats} ...", flush=True)
            passes["raw"].append(_measure_raw(staged_files, dataset.num_jets))
            passes["ours"].append(_measure_ours(dataset, staged_files, args.batch_size))
        weaver = {}
        # Default weaver fetches 1% of every file at a time, so a part of the epoch shows its
        # rate; whole-file fetches are timed over the epoch, or the first fetch would dominate.
        for name, fetch_by_files, fetch_step, max_jets in (
            ("weaver", False, 0.01, args.weaver_jets),
            ("weaver_fetch_by_files", True, 1, None),
        ):
            print(f"{name}: {max_jets or 'all'} jets ...", flush=True)
            weaver[name] = _measure_weaver(
                files,
                config_path,
                args,
                fetch_by_files=fetch_by_files,
                fetch_step=fetch_step,
                max_jets=max_jets,
            )
        result = _summarise(args, files, dataset, generation, staging_s, passes, weaver)
    _write(result, args.out)
    print((args.out / "loader.md").read_text())
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jets", type=int, default=200_000, help="toy jets to generate")
    parser.add_argument("--files", nargs="+", help="Parquet files/globs instead of toy jets")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="cold+warm passes; medians")
    parser.add_argument("--weaver-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument(
        "--weaver-jets",
        type=int,
        default=40_000,
        help="jets default weaver is timed over (whole-file fetching: the epoch)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    return parser.parse_args(argv)


def _input_files(args: argparse.Namespace, workdir: Path) -> tuple[list[Path], dict[str, Any]]:
    """The given files, or freshly generated toy jets."""
    if args.files:
        return resolve_files(args.files), {"source": "given files"}
    print(f"generating {args.jets} toy jets ...", flush=True)
    started = time.perf_counter()
    files = write_toy_dataset(workdir / "toy", num_jets=args.jets, seed=1)
    return files, {
        "source": "trainyard.datasets.toy, seed 1, 10000 jets per file",
        "seconds": round(time.perf_counter() - started, 2),
    }


def _measure_raw(paths: list[Path], num_jets: int) -> dict[str, float]:
    """Read every staged file sequentially with large reads, cold then warm."""
    buffer = memoryview(bytearray(RAW_READ_BYTES))

    def read_all() -> float:
        started = time.perf_counter()
        for path in paths:
            with path.open("rb", buffering=0) as file:
                while file.readinto(buffer):
                    pass
        return num_jets / (time.perf_counter() - started)

    resident = _drop_from_page_cache(paths)
    cold = read_all()
    return {"cold": cold, "warm": read_all(), "resident_before_cold": resident}


def _measure_ours(dataset: StagedDataset, paths: list[Path], batch_size: int) -> dict[str, float]:
    """One epoch right after dropping the cache (cold), then the next epoch (warm)."""
    resident = _drop_from_page_cache(paths)
    loader = StagedLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        seed=1,
        prefetch=PREFETCH,
        fields=WEAVER_PARTICLENET_FIELDS,
    )
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        num_jets = sum(len(batch) for batch in loader)
        rates.append(num_jets / (time.perf_counter() - started))
    loader.close()
    return {"cold": rates[0], "warm": rates[1], "resident_before_cold": resident}


def _measure_weaver(
    files: list[Path],
    config_path: Path,
    args: argparse.Namespace,
    *,
    fetch_by_files: bool,
    fetch_step: float,
    max_jets: int | None,
) -> dict[str, Any]:
    """Jets/s of weaver's training loader, timed from its first batch (startup excluded)."""
    from torch.utils.data import DataLoader
    from weaver.utils.dataset import SimpleIterDataset

    resident = _drop_from_page_cache(files)
    dataset = SimpleIterDataset(
        {"_": [str(file) for file in files]},
        str(config_path),
        batch_size=args.batch_size,
        for_training=True,
        load_range_and_fraction=((0, 1), 1, 1),
        fetch_by_files=fetch_by_files,
        fetch_step=fetch_step,
        in_memory=False,
        name="train",
    )
    num_workers = min(args.weaver_workers, len(files))
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    num_jets, started = 0, 0.0
    for _inputs, labels, _observers in loader:
        if started == 0.0:
            started = time.perf_counter()
        else:
            num_jets += len(labels["_label_"])
        if max_jets is not None and num_jets >= max_jets:
            break
    elapsed = time.perf_counter() - started
    return {
        "jets_per_s": num_jets / elapsed,
        "timed_jets": num_jets,
        "num_workers": num_workers,
        "fetch_by_files": fetch_by_files,
        "fetch_step": fetch_step,
        "in_memory": False,
        "resident_before": resident,
    }


def _drop_from_page_cache(paths: list[Path]) -> float:
    """Evict ``paths`` from the page cache; returns the share of their bytes still cached."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # dirty pages cannot be dropped
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    return _resident_share(paths)


def _resident_share(paths: list[Path]) -> float:
    """Share of the pages of ``paths`` in the page cache, from mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = os.sysconf("SC_PAGE_SIZE")
    resident = total = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        pages = np.zeros(-(-size // page), dtype=np.uint8)
        status = libc.mincore(
            ctypes.c_void_p(mapped.ctypes.data),
            ctypes.c_size_t(size),
            pages.ctypes.data_as(ctypes.c_void_p),
        )
        if status != 0:
            raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
        resident += int((pages & 1).sum())
        total += len(pages)
        del mapped
    return resident / max(total, 1)


def _summarise(
    args: argparse.Namespace,
    files: list[Path],
    dataset: StagedDataset,
    generation: dict[str, Any],
    staging_s: float,
    passes: dict[str, list[dict[str, float]]],
    weaver: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in passes[name])

    ours = {key: median("ours", key) for key in ("cold", "warm")}
    raw = {key: median("raw", key) for key in ("cold", "warm")}
    weaver_rate = weaver["weaver"]["jets_per_s"]
    resident = max(run["resident_before_cold"] for runs in passes.values() for run in runs)
    return {
        "benchmark": "loader",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": _machine(),
        "dataset": {
            **generation,
            "jets": dataset.num_jets,
            "files": len(files),
            "parquet_bytes": sum(file.stat().st_size for file in files),
            "staged_bytes": dataset.num_bytes,
            "staged_bytes_per_jet": dataset.num_bytes // dataset.num_jets,
        },
        "settings": {
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "ours": {
                "shuffle": True,
                "prefetch": PREFETCH,
                "block_size": DEFAULT_BLOCK_SIZE,
                "window_blocks": DEFAULT_WINDOW_BLOCKS,
                "io": "mmap",
            },
            "raw": {"read_bytes": RAW_READ_BYTES},
            "weaver_config": WEAVER_CONFIG,
        },
        "cache": {
            "how": "posix_fadvise(POSIX_FADV_DONTNEED) on every file before each cold pass",
            "max_resident_share_before_cold": round(resident, 4),
            "cold_is_cold": resident < 0.01,
            "note": "on a VM the host may still cache the disk; cold means the guest's cache",
        },
        "staging": {"seconds": round(staging_s, 2), "jets_per_s": dataset.num_jets / staging_s},
        "jets_per_s": {
            "weaver": weaver["weaver"],
            "weaver_fetch_by_files": weaver["weaver_fetch_by_files"],
            "ours": ours,
            "raw": raw,
            "passes": passes,
        },
        "goals": {
            "ours_over_weaver_at_least_10": ours["cold"] / weaver_rate >= 10,
            "ours_over_raw_at_least_half": {key: ours[key] / raw[key] >= 0.5 for key in ours},
        },
        "ratios": {
            "ours_over_weaver": {key: ours[key] / weaver_rate for key in ours},
            "ours_over_weaver_fetch_by_files": {
                key: ours[key] / weaver["weaver_fetch_by_files"]["jets_per_s"] for key in ours
            },
            "ours_over_raw": {key: ours[key] / raw[key] for key in ours},
        },
    }


def _machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "weaver_core": metadata.version("weaver-core"),
        "cuda": torch.cuda.is_available(),
    }


def _write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "loader.md").write_text(_markdown(result))


def _markdown(result: dict[str, Any]) -> str:
    rates, ratios = result["jets_per_s"], result["ratios"]
    machine, data, cache = result["machine"], result["dataset"], result["cache"]
    weaver, tuned = rates["weaver"], rates["weaver_fetch_by_files"]
    cold_state = "cold" if cache["cold_is_cold"] else "NOT cold (drop failed)"
    lines = [
        "# Loader benchmark",
        "",
        f"{result['date']}; {machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB; load average at the end "
        f"{machine['load_average_at_end']}; torch {machine['torch']}, "
        f"weaver-core {machine['weaver_core']}.",
        "",
        f"{data['jets']} jets in {data['files']} Parquet file(s) ({data['source']}); "
        f"staged: {data['staged_bytes'] / 1e9:.2f} GB ({data['staged_bytes_per_jet']} B/jet), "
        f"staging took {result['staging']['seconds']} s "
        f"({result['staging']['jets_per_s']:,.0f} jets/s, once per dataset and config). "
        f"Batch size {result['settings']['batch_size']}; ours and raw are medians of "
        f"{result['settings']['repeats']} passes.",
        "",
        "| loader | cache | jets/s | ours / this |",
        "| --- | --- | ---: | ---: |",
        f"| weaver-core SimpleIterDataset, fetch_step {weaver['fetch_step']}, "
        f"{weaver['num_workers']} workers | {cold_state} | {weaver['jets_per_s']:,.0f} | "
        f"{ratios['ours_over_weaver']['cold']:,.0f}x |",
        f"| weaver-core, fetch_by_files, fetch_step 1, {tuned['num_workers']} workers | "
        f"{cold_state} | {tuned['jets_per_s']:,.0f} | "
        f"{ratios['ours_over_weaver_fetch_by_files']['cold']:,.0f}x |",
        f"| raw sequential read, 8 MiB reads | {cold_state} | {rates['raw']['cold']:,.0f} | "
        f"{ratios['ours_over_raw']['cold']:.0%} |",
        f"| raw sequential read, 8 MiB reads | warm | {rates['raw']['warm']:,.0f} | "
        f"{ratios['ours_over_raw']['warm']:.0%} |",
        f"| **ours**: StagedLoader (mmap, prefetch {result['settings']['ours']['prefetch']}) | "
        f"{cold_state} | **{rates['ours']['cold']:,.0f}** | |",
        f"| **ours**: StagedLoader, next epoch | warm | **{rates['ours']['warm']:,.0f}** | |",
        "",
        f"Goals: ours >= 10x weaver: {_verdict(result['goals']['ours_over_weaver_at_least_10'])}; "
        "ours >= 50% of the raw read: cold "
        f"{_verdict(result['goals']['ours_over_raw_at_least_half']['cold'])}, warm "
        f"{_verdict(result['goals']['ours_over_raw_at_least_half']['warm'])}.",
        "",
        "weaver is timed from its first batch (worker start and first fetch excluded, which "
        f"favours it) over {weaver['timed_jets']:,} jets, with fetch_by_files over the epoch "
        f"({tuned['timed_jets']:,} jets); being CPU-bound it is set against our cold epoch. "
        "Cold: " + cache["how"] + "; at most "
        f"{cache['max_resident_share_before_cold']:.1%} of the bytes were still cached; "
        + cache["note"]
        + ".",
        "",
    ]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


if __name__ == "__main__":
    sys.exit(main())

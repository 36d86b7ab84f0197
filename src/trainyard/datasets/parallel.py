"""Write a sharded dataset with a pool of processes: atomic shards, resumable, live progress.

A dataset is one folder of ``{prefix}-{index:04d}.parquet`` shards. Every shard carries the
run's settings in its Parquet metadata (key ``schema.METADATA_KEY``, JSON), so a rerun keeps
the shards made with the same settings, makes only the missing ones, and refuses to mix in
shards made differently. A shard appears only when complete (temp file + rename), so a run can
be killed at any moment.
"""

import dataclasses
import json
import multiprocessing
import os
import queue
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trainyard.datasets import schema
from trainyard.datasets.jet_table import write_table_atomically
from trainyard.errors import DataError, TrainyardError

Report = Callable[[int], None]
"""Called with the number of items (jets) a shard has just added."""
MakeShard = Callable[[int, int, Report], tuple[pa.Table, dict[str, Any]]]
"""(shard index, items in the shard, report) -> (table, shard-specific metadata)."""

_POLL_S = 0.2


@dataclass(frozen=True)
class ShardPlan:
    """What a run will write, and which shards an earlier run already finished."""

    out_dir: Path
    prefix: str
    shard_sizes: tuple[int, ...]
    run_metadata: dict[str, Any]
    """Settings shared by every shard; a rerun must match them exactly."""
    make_shard: MakeShard
    finished: frozenset[int]

    def path(self, shard_index: int) -> Path:
        """Where shard ``shard_index`` lives."""
        return self.out_dir / f"{self.prefix}-{shard_index:04d}.parquet"

    @property
    def missing(self) -> list[int]:
        """Shards still to make, in order."""
        return [i for i in range(len(self.shard_sizes)) if i not in self.finished]

    @property
    def num_items(self) -> int:
        """Items of the whole dataset."""
        return sum(self.shard_sizes)

    @property
    def num_items_done(self) -> int:
        """Items already in finished shards, where a resumed progress bar starts."""
        return sum(self.shard_sizes[i] for i in self.finished)


def split_into_shards(num_items: int, items_per_shard: int) -> tuple[int, ...]:
    """Shard sizes: full shards of ``items_per_shard`` and a smaller last one."""
    num_full, rest = divmod(num_items, items_per_shard)
    return (items_per_shard,) * num_full + ((rest,) if rest else ())


def plan_shards(
    out_dir: Path,
    *,
    prefix: str,
    shard_sizes: tuple[int, ...],
    run_metadata: dict[str, Any],
    make_shard: MakeShard,
) -> ShardPlan:
    """Find the finished shards in ``out_dir``; any shard made differently is refused.

    The refusal names the file, each setting that differs (there / now) and what to do.
    """
    # JSON round trip: compared with stored settings, tuples must already be lists.
    run_metadata = json.loads(json.dumps(run_metadata))
    plan = ShardPlan(Path(out_dir), prefix, shard_sizes, run_metadata, make_shard, frozenset())
    finished = set()
    for path in sorted(plan.out_dir.glob(f"{prefix}-*.parquet")):
        stored = _stored_metadata(path)
        differences = _differences(
            {key: value for key, value in stored.items() if key != "shard"}, run_metadata
        )
        if differences:
            lines = "\n".join(f"  - {line}" for line in differences)
            raise DataError(
                f"{path} was made with other settings than this run:\n{lines}\n"
                "Rerun with that file's settings to complete its dataset, choose another "
                "--out folder, or delete that folder's shards to start over"
            )
        index = stored.get("shard", {}).get("index")
        if index in range(len(shard_sizes)) and path == plan.path(index):
            finished.add(index)
    return dataclasses.replace(plan, finished=frozenset(finished))


def _stored_metadata(path: Path) -> dict[str, Any]:
    """The run settings a shard was written with; unreadable shards are named."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        stored = json.loads(metadata[schema.METADATA_KEY])
    except (OSError, pa.ArrowException, KeyError, ValueError) as err:
        stored = f"{type(err).__name__}: {err}"
    if not isinstance(stored, dict):
        raise DataError(
            f"{path} is not a shard this generator wrote ({stored}); delete it (a rerun makes "
            "it again) or choose another --out folder"
        )
    return stored


def _differences(there: Any, now: Any, key: str = "") -> list[str]:
    """One line per differing setting, with dotted keys; lists say what was added or lost."""
    if isinstance(there, dict) and isinstance(now, dict):
        found = []
        for name in sorted(set(there) | set(now), key=str):
            child = f"{key}.{name}" if key else str(name)
            found += _differences(there.get(name), now.get(name), child)
        return found
    if there == now:
        return []
    if isinstance(there, list) and isinstance(now, list):
        only_there = [item for item in there if item not in now]
        only_now = [item for item in now if item not in there]
        if only_there or only_now:
            return [f"{key}: {only_there} there, {only_now} now"]
        return [f"{key}: same entries in another order"]
    return [f"{key}: {json.dumps(there)} there, {json.dumps(now)} now"]


def write_shards(plan: ShardPlan, *, num_workers: int, report: Report) -> list[Path]:
    """Make every missing shard in a pool of ``num_workers`` processes; returns all paths.

    Each worker writes its shard atomically as soon as it is complete. ``report`` receives
    progress from the workers as it happens. The first failing shard stops the run (its error
    is raised here); finished shards stay, so a rerun completes the set.
    """
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    # Temp files of a killed earlier run; one run per folder at a time is assumed.
    for leftover in plan.out_dir.glob(f".{plan.prefix}-*.tmp"):
        leftover.unlink(missing_ok=True)
    missing = plan.missing
    if missing:
        _run_pool(plan, missing, min(num_workers, len(missing)), report)
    return [plan.path(i) for i in range(len(plan.shard_sizes))]


def _run_pool(plan: ShardPlan, missing: list[int], num_workers: int, report: Report) -> None:
    """Feed shard indices to worker processes and relay their messages until all are done.

    Workers ignore Ctrl-C and are terminated by the parent on any way out, so nothing lingers;
    a worker that dies (killed, out of memory) is reported instead of waited for.
    """
    # spawn, not fork: the parent may hold threads (the progress display) and Pythia state.
    context = multiprocessing.get_context("spawn")
    tasks, messages = context.Queue(), context.Queue()
    for index in [*missing, *[None] * num_workers]:
        tasks.put(index)
    workers = [
        context.Process(target=_work, args=(plan, tasks, messages), daemon=True)
        for _ in range(num_workers)
    ]
    for worker in workers:
        worker.start()
    pending, shard_of_worker = set(missing), {}
    try:
        while pending:
            try:
                kind, index, value = messages.get(timeout=_POLL_S)
            except queue.Empty:
                _check_alive(workers, shard_of_worker)
                continue
            if kind == "started":
                shard_of_worker[value] = index
            elif kind == "progress":
                report(value)
            elif kind == "done":
                pending.discard(index)
            elif kind == "error":
                raise DataError(value)
            else:
                raise RuntimeError(f"making shard {index} failed unexpectedly:\n{value}")
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def _check_alive(workers: list[Any], shard_of_worker: dict[int, int]) -> None:
    """Raise if a worker died without reporting: its shard would never arrive."""
    for worker in workers:
        if worker.exitcode not in (None, 0):
            shard = shard_of_worker.get(worker.pid)
            raise DataError(
                f"the worker process making shard {shard} died (exit code {worker.exitcode}; "
                "negative is the signal that killed it, e.g. -9 when out of memory); finished "
                "shards are kept, rerun the same command to make the rest"
            )


def _work(plan: ShardPlan, tasks: Any, messages: Any) -> None:
    """Worker loop: make shards until the None sentinel, reporting as (kind, shard, value)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while (index := tasks.get()) is not None:
        messages.put(("started", index, os.getpid()))
        try:
            _write_one(plan, index, lambda count, i=index: messages.put(("progress", i, count)))
        except TrainyardError as err:
            messages.put(("error", index, str(err)))
            return
        except Exception:
            messages.put(("crash", index, traceback.format_exc()))
            return
        messages.put(("done", index, None))


def _write_one(plan: ShardPlan, shard_index: int, report: Report) -> None:
    """Make one shard and write it atomically with the run's and its own metadata."""
    table, shard_metadata = plan.make_shard(shard_index, plan.shard_sizes[shard_index], report)
    metadata = {
        **plan.run_metadata,
        "shard": {
            "index": shard_index,
            "num_shards": len(plan.shard_sizes),
            "num_items": plan.shard_sizes[shard_index],
            **shard_metadata,
        },
    }
    encoded = {schema.METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
    write_table_atomically(table.replace_schema_metadata(encoded), plan.path(shard_index))

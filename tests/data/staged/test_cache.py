"""The staging cache's limit: least recently used datasets are evicted, never one that another
process is reading (a real process holds the lease), a later reader stages again, and the
Master's janitor and `trainyard data cache` apply the limit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trainyard.cli.app import app
from trainyard.data.staged.cache import cache_entries, evict, use_lock_path
from trainyard.data.staged.staging import find_staged, stage
from trainyard.master.cache_janitor import StagingCacheJanitor
from trainyard.settings import Settings

KEYS = ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc")


def _stage(cache_root: Path, key: str, last_used: float) -> int:
    """A small dataset under `key`, last used at `last_used` (seconds since the epoch)."""
    chunk = {"x": np.arange(1000, dtype=np.float32).reshape(100, 10)}
    dataset = stage([chunk], cache_root, key=key)
    del dataset  # drops its lease
    os.utime(use_lock_path(cache_root, key), (last_used, last_used))
    return sum(p.stat().st_size for p in (cache_root / key).iterdir())


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Path, int]:
    """Three datasets, KEYS[0] least recently used; (cache root, bytes of one)."""
    root = tmp_path / "cache" / "staged"
    now = time.time()
    sizes = [_stage(root, key, now - 300 + 100 * i) for i, key in enumerate(KEYS)]
    return root, sizes[0]


@pytest.fixture
def reader(cache: tuple[Path, int]) -> Iterator[subprocess.Popen[str]]:
    """Another process reading KEYS[0] (the least recently used) until its stdin closes."""
    code = textwrap.dedent(
        f"""
        import sys
        from trainyard.data.staged.staging import find_staged
        dataset = find_staged({str(cache[0])!r}, {KEYS[0]!r})
        print("reading" if dataset is not None else "missing", flush=True)
        sys.stdin.read()
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "reading"
    # Opening touched it; a long training opened it long ago, so it is the LRU again.
    os.utime(use_lock_path(cache[0], KEYS[0]), (time.time() - 600, time.time() - 600))
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_lru_datasets_go_first_and_one_being_read_stays(cache, reader) -> None:
    root, one = cache
    entries = cache_entries(root)
    assert [e.key for e in entries] == list(KEYS)
    assert [e.in_use for e in entries] == [True, False, False]

    evicted = evict(root, max_bytes=one)  # room for one: the LRU is read, so the next two go
    assert [e.key for e in evicted] == [KEYS[1], KEYS[2]]
    assert [e.key for e in cache_entries(root)] == [KEYS[0]]
    assert find_staged(root, KEYS[1]) is None  # a later reader finds nothing and restages

    reader.communicate("")  # the reader ends: its lease goes with it
    assert [e.in_use for e in cache_entries(root)] == [False]
    assert [e.key for e in evict(root, max_bytes=0)] == [KEYS[0]]
    assert cache_entries(root) == []


def test_a_dataset_kept_by_this_process_and_keep_are_never_evicted(cache) -> None:
    root, _ = cache
    held = find_staged(root, KEYS[1])
    assert held is not None
    assert [e.key for e in evict(root, max_bytes=0, keep=frozenset({KEYS[2]}))] == [KEYS[0]]
    assert {e.key for e in cache_entries(root)} == {KEYS[1], KEYS[2]}
    del held
    assert [e.key for e in evict(root, max_bytes=0, keep=frozenset({KEYS[2]}))] == [KEYS[1]]


def test_the_janitor_applies_the_limit(cache, reader, tmp_path: Path) -> None:
    root, one = cache
    settings = Settings(home=tmp_path, staging_cache_max_gb=one / 1e9, staging_cache_check_s=0.05)
    assert settings.staging_dir() == root
    janitor = StagingCacheJanitor.start_if_limited(settings)
    assert janitor is not None
    try:
        deadline = time.monotonic() + 60
        while len(cache_entries(root)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        janitor.stop()
    assert [e.key for e in cache_entries(root)] == [KEYS[0]]  # the one being read
    assert StagingCacheJanitor.start_if_limited(Settings(home=tmp_path)) is None


def test_the_cache_command_lists_and_evicts(cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path))
    monkeypatch.delenv("TRAINYARD_STAGING_CACHE_MAX_GB", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    listed = runner.invoke(app, ["data", "cache"])
    assert listed.exit_code == 0, listed.output
    assert all(key in listed.output for key in KEYS)
    assert "3 dataset(s)" in listed.output and "(no limit set)" in listed.output

    refused = runner.invoke(app, ["data", "cache", "--evict"])
    assert refused.exit_code == 2
    assert "--evict needs a limit: pass --max-gb or set TRAINYARD_STAGING_CACHE_MAX_GB" in (
        refused.output
    )
    evicted = runner.invoke(app, ["data", "cache", "--evict", "--max-gb", "0"])
    assert evicted.exit_code == 0, evicted.output
    assert "evicted 3 dataset(s)" in evicted.output and "0 dataset(s)" in evicted.output

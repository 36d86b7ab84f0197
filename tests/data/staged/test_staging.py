"""stage(): round trip, reuse by key, atomicity, full disks, damaged folders, ParticleNet."""

import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from tests.data import config_files
from trainyard.data.features import load_jet_arrays
from trainyard.data.reader import resolve_files
from trainyard.data.staged import staging
from trainyard.data.staged.dataset import DATA_OFFSET, MANIFEST_NAME, StagedDataset
from trainyard.data.staged.loader import WEAVER_PARTICLENET_FIELDS, StagedLoader
from trainyard.data.staged.sources import (
    ParticleNetSource,
    WeaverConfigSource,
    stage_source,
)
from trainyard.data.staged.staging import find_staged, stage, staging_key
from trainyard.data.weaver.pipeline import load_arrays
from trainyard.errors import DataError

KEY = "0123456789abcdef0123456789abcdef"
WRAP = config_files.WRAP


def _arrays(num_jets: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pf_points": rng.normal(size=(num_jets, 2, 5)).astype(np.float32),
        "pf_mask": (rng.random((num_jets, 1, 5)) > 0.5).astype(np.float32),
        "label": rng.integers(0, 2, num_jets),
        "jet_mass": rng.random(num_jets).astype(np.float64),
    }


def _chunks(arrays: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    num_jets = len(arrays["label"])
    for start in range(0, num_jets, size):
        yield {name: array[start : start + size] for name, array in arrays.items()}


def _leftovers(cache_root: Path) -> list[str]:
    """Entries of the cache root other than lock files."""
    return sorted(p.name for p in cache_root.iterdir() if not p.name.endswith((".lock", ".use")))


def test_round_trip_across_chunks_and_shards(tmp_path: Path) -> None:
    arrays = _arrays(103)
    dataset = stage(
        _chunks(arrays, 20),
        tmp_path,
        key=KEY,
        extra_manifest={"standardisation": {"pt": [1.7, 0.7]}, "data_config": "inputs: {}"},
        jets_per_shard=40,
    )
    assert dataset.root == tmp_path / KEY
    assert dataset.num_jets == 103
    assert dataset.shard_sizes == (40, 40, 23)
    assert dataset.specs["pf_points"].shape == (2, 5)
    assert dataset.extra["standardisation"] == {"pt": [1.7, 0.7]}
    for name, expected in arrays.items():
        shards = dataset.open_arrays(name)
        assert all(isinstance(shard, np.memmap) for shard in shards)
        np.testing.assert_array_equal(np.concatenate(shards), expected)
        assert shards[0].offset == DATA_OFFSET
    manifest = json.loads((dataset.root / MANIFEST_NAME).read_text())
    assert manifest["key"] == KEY
    assert manifest["shard_sizes"] == [40, 40, 23]
    assert manifest["arrays"]["label"] == {"dtype": "<i8", "shape": []}
    assert _leftovers(tmp_path) == [KEY]


def test_same_key_is_reused_without_reading_the_chunks(tmp_path: Path) -> None:
    first = stage(_chunks(_arrays(30), 30), tmp_path, key=KEY)
    written_at = first.shard_path("label", 0).stat().st_mtime_ns

    def must_not_run() -> Iterator[dict[str, np.ndarray]]:
        raise AssertionError("the chunks of a reused key were read")
        yield {}

    again = stage(must_not_run(), tmp_path, key=KEY)
    assert again == first
    assert again.shard_path("label", 0).stat().st_mtime_ns == written_at


def test_concurrent_stagers_of_one_key_write_it_once(tmp_path: Path) -> None:
    produced: list[str] = []

    def slow_chunks(name: str) -> Iterator[dict[str, np.ndarray]]:
        produced.append(name)
        time.sleep(0.2)
        yield _arrays(10)

    results: list[StagedDataset] = []
    threads = [
        threading.Thread(
            target=lambda n=n: results.append(stage(slow_chunks(n), tmp_path, key=KEY))
        )
        for n in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(produced) == 1
    assert results[0] == results[1]


def test_progress_is_reported_per_chunk_and_while_another_stager_holds_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    monkeypatch.setattr(staging, "LOCK_POLL_S", 0.01)
    calls: list[str] = []
    stage(_chunks(_arrays(30), 10), tmp_path / "a", key=KEY, on_progress=lambda: calls.append("c"))
    assert calls == ["c", "c", "c"]

    other = tmp_path / "b"
    other.mkdir()
    waited = threading.Event()
    with (other / f".{KEY}.lock").open("a") as held:  # another process staging this key
        fcntl.flock(held, fcntl.LOCK_EX)
        waiter = threading.Thread(
            target=lambda: stage(_chunks(_arrays(10), 10), other, key=KEY, on_progress=waited.set)
        )
        waiter.start()
        assert waited.wait(timeout=10), "a waiting stager reports progress"
        assert waiter.is_alive() and find_staged(other, KEY) is None
        fcntl.flock(held, fcntl.LOCK_UN)
    waiter.join(timeout=10)
    assert find_staged(other, KEY) is not None


def test_without_flock_staging_still_works_and_keeps_others_temporary_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_flock(file: object, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(staging.fcntl, "flock", no_flock)
    in_progress = tmp_path / f".tmp-{KEY}-otherhost-12345"
    in_progress.mkdir()
    dataset = stage(_chunks(_arrays(10), 10), tmp_path, key=KEY)
    assert dataset.num_jets == 10
    assert in_progress.is_dir()  # without a lock it may belong to a live stager
    assert "staging without a lock" in caplog.text


def test_key_follows_files_and_config(tmp_path: Path) -> None:
    file = tmp_path / "a.parquet"
    file.write_bytes(b"1234")
    key = staging_key([file], "config: 1")
    assert key == staging_key([file], "config: 1")
    assert len(key) == 32
    assert staging_key([file], "config: 2") != key
    os.utime(file, ns=(1, 1))
    touched = staging_key([file], "config: 1")
    assert touched != key
    file.write_bytes(b"12345")
    os.utime(file, ns=(1, 1))
    assert staging_key([file], "config: 1") != touched
    with pytest.raises(DataError, match=r"missing\.parquet"):
        staging_key([tmp_path / "missing.parquet"], "config: 1")


def test_a_failing_producer_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken() -> Iterator[dict[str, np.ndarray]]:
        yield _arrays(10)
        raise RuntimeError("reader crashed")

    with pytest.raises(RuntimeError, match="reader crashed"):
        stage(broken(), tmp_path, key=KEY, jets_per_shard=4)
    assert _leftovers(tmp_path) == []
    assert find_staged(tmp_path, KEY) is None


def test_an_abandoned_temporary_folder_is_never_used_and_is_cleaned(tmp_path: Path) -> None:
    abandoned = tmp_path / f".tmp-{KEY}-otherhost-12345"
    abandoned.mkdir()
    (abandoned / MANIFEST_NAME).write_text("{}")
    assert find_staged(tmp_path, KEY) is None
    stage(_chunks(_arrays(10), 10), tmp_path, key=KEY)
    assert _leftovers(tmp_path) == [KEY]


class _QuotaFile:
    """A real file that runs out of disk after ``budget`` bytes, as ENOSPC does."""

    def __init__(self, path: Path, budget: list[int]) -> None:
        self._file = path.open("xb")
        self._budget = budget

    def write(self, data: bytes | memoryview) -> int:
        size = memoryview(data).nbytes
        if size > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= size
        return self._file.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)


def test_a_full_disk_mid_staging_keeps_nothing_and_says_what_to_do(tmp_path: Path) -> None:
    budget = [20_000]

    def open_file(path: Path) -> BinaryIO:
        return _QuotaFile(path, budget)  # type: ignore[return-value]

    with pytest.raises(DataError) as caught:
        stage(_chunks(_arrays(500), 50), tmp_path, key=KEY, num_jets=500, open_file=open_file)
    message = str(caught.value)
    assert "is full" in message
    assert str(tmp_path) in message
    assert "needed" in message and "in all" in message
    assert "larger disk" in message
    assert _leftovers(tmp_path) == []
    assert stage(_chunks(_arrays(500), 50), tmp_path, key=KEY).num_jets == 500


def test_too_little_free_space_fails_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Path] = []

    def open_file(path: Path) -> BinaryIO:
        opened.append(path)
        return path.open("xb")

    monkeypatch.setattr(staging, "_free_bytes", lambda folder: 1000)
    with pytest.raises(DataError, match=r"staging needs .* only 1000.0 B is free"):
        stage(_chunks(_arrays(100), 50), tmp_path, key=KEY, num_jets=100, open_file=open_file)
    assert opened == []
    assert _leftovers(tmp_path) == []


def test_chunks_must_agree_with_the_first(tmp_path: Path) -> None:
    second = _arrays(5)
    second["pf_points"] = second["pf_points"][:, :, :4]
    with pytest.raises(DataError, match=r"chunk 1 .* pf_points: float32 \(2, 4\)"):
        stage(iter([_arrays(5), second]), tmp_path, key=KEY)
    with pytest.raises(DataError, match="different numbers of jets"):
        stage(iter([{"a": np.zeros(3), "b": np.zeros(4)}]), tmp_path, key=KEY)
    with pytest.raises(DataError, match="no jets to stage"):
        stage(iter([]), tmp_path, key=KEY)
    assert _leftovers(tmp_path) == []


def test_a_damaged_folder_is_reported_and_staged_again(tmp_path: Path) -> None:
    dataset = stage(_chunks(_arrays(30), 30), tmp_path, key=KEY)
    path = dataset.shard_path("pf_points", 0)
    with path.open("r+b") as file:
        file.truncate(DATA_OFFSET + 10)
    with pytest.raises(DataError, match=r"pf_points.00000.npy should hold .* damaged"):
        StagedDataset.open(dataset.root)
    assert find_staged(tmp_path, KEY) is None
    restaged = stage(_chunks(_arrays(30), 30), tmp_path, key=KEY)
    np.testing.assert_array_equal(restaged.open_arrays("pf_points")[0], _arrays(30)["pf_points"])


def test_particlenet_source_stages_the_particlenet_inputs(toy_dir: Path, tmp_path: Path) -> None:
    files = resolve_files(toy_dir)
    source = ParticleNetSource(files, max_particles=32)
    assert source.num_jets() == 500
    assert source.config_text() != ParticleNetSource(files, max_particles=64).config_text()
    dataset = stage_source(source, tmp_path, jets_per_shard=300)
    expected = load_jet_arrays(toy_dir, max_particles=32)
    for name, array in [("features", expected.features_NCP), ("labels", expected.labels_N)]:
        np.testing.assert_array_equal(np.concatenate(dataset.open_arrays(name)), array)
    assert dataset.extra["feature_names"][0] == "part_pt_log"
    assert stage_source(ParticleNetSource(files, max_particles=32), tmp_path) == dataset


def test_particlenet_source_stages_vectors_only_when_asked(toy_dir: Path, tmp_path: Path) -> None:
    files = resolve_files(toy_dir)
    plain = ParticleNetSource(files, max_particles=32)
    source = ParticleNetSource(files, max_particles=32, vectors=True)
    assert source.config_text() != plain.config_text()
    dataset = stage_source(source, tmp_path)
    expected = load_jet_arrays(toy_dir, max_particles=32)
    vectors_N4P = np.concatenate(dataset.open_arrays("vectors"))
    assert vectors_N4P.shape == (500, 4, 32)
    np.testing.assert_array_equal(vectors_N4P * expected.mask_N1P, vectors_N4P)
    np.testing.assert_array_equal(np.concatenate(dataset.open_arrays("mask")), expected.mask_N1P)
    assert dataset.extra["vector_names"] == ["part_px", "part_py", "part_pz", "part_energy"]
    assert "vectors" not in stage_source(plain, tmp_path).specs
    loader = StagedLoader(
        dataset,
        batch_size=50,
        shuffle=False,
        seed=0,
        fields={"features": "features", "vectors": "vectors", "mask": "mask", "labels": "labels"},
    )
    batch = next(iter(loader))
    assert "points" not in batch.inputs and "vectors" in batch.inputs
    assert batch.inputs["vectors"].shape == (50, 4, 32)
    loader.close()


def test_weaver_config_source_stages_the_pipeline_arrays(toy_dir: Path, tmp_path: Path) -> None:
    files = resolve_files(toy_dir)
    dataset = stage_source(WeaverConfigSource(files, WRAP), tmp_path)
    expected = load_arrays(files, WRAP, training=True)
    assert sorted(dataset.specs) == sorted(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(np.concatenate(dataset.open_arrays(name)), array)
    assert dataset.extra["producer"] == "weaver-data-config"
    assert dataset.extra["data_config"]["inputs"]["pf_features"]["length"] == 128
    loader = StagedLoader(
        dataset,
        batch_size=100,
        shuffle=False,
        seed=0,
        full_batches=False,
        fields=WEAVER_PARTICLENET_FIELDS,
    )
    batch = next(iter(loader))
    np.testing.assert_array_equal(batch.inputs["features"].numpy(), expected["_pf_features"][:100])
    np.testing.assert_array_equal(batch.labels.numpy(), expected["_label_"][:100])
    testing = WeaverConfigSource(files, WRAP, training=False)
    assert testing.config_text() != WeaverConfigSource(files, WRAP).config_text()

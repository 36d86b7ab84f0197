"""A small toy dataset on disk, shared by the reader, feature and loader tests."""

from pathlib import Path

import pytest

from trainyard.datasets.toy import write_toy_dataset


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three shards (200 + 200 + 100 jets) of seed 21."""
    out_dir = tmp_path_factory.mktemp("toy")
    write_toy_dataset(out_dir, num_jets=500, seed=21, jets_per_shard=200)
    return out_dir

"""A small toy data set on disk for the export tests."""

from pathlib import Path

import pytest

from trainyard.datasets.toy import write_toy_dataset


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards (200 + 100 jets) of seed 31."""
    out_dir = tmp_path_factory.mktemp("toy")
    write_toy_dataset(out_dir, num_jets=300, seed=31, jets_per_shard=200)
    return out_dir

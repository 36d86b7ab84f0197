"""Fixtures: a real SQLite store file per test, as the Master would open it."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from trainyard.store import Store, open_store


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    # A nested folder that does not exist yet, as a fresh $TRAINYARD_HOME would be.
    return f"sqlite:///{tmp_path / 'home' / 'trainyard.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()

"""Shared set-up for end-to-end runs: a small toy set, experiment files, the CLI as a process,
and one finished run of the default experiment that several tests read."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, sync_playwright

from tests.integration.helpers import cli_env, experiment, run_cli
from trainyard.datasets.toy import write_toy_dataset


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root / "train", num_jets=2048, seed=11)
    write_toy_dataset(root / "val", num_jets=512, seed=12)
    return root


@pytest.fixture
def write_experiment(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(config: dict[str, Any]) -> Path:
        path = tmp_path / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@dataclass(frozen=True)
class FinishedRun:
    """`trainyard run` of `experiment(toy_data)` (40 batches) in a home of its own."""

    home: Path
    result: subprocess.CompletedProcess[str]
    """The `trainyard run` process, for what it printed."""


@pytest.fixture(scope="session")
def finished_run(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """One finished run that the tests which only read it share (a test that changes its
    store or files runs its own): one run of the suite's slowest kind instead of one each."""
    root = tmp_path_factory.mktemp("finished")
    file = root / "e2e.yaml"
    file.write_text(yaml.safe_dump(experiment(toy_data)))
    result = run_cli(["run", str(file)], cli_env(root / "home"))
    assert result.returncode == 0, result.stdout + result.stderr
    return FinishedRun(home=root / "home", result=result)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (`playwright install` cannot download one here),
    one for the session's browser tests."""
    chromium = shutil.which("chromium")
    assert chromium is not None, "Debian's chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()

"""The Lightning integration end to end: the example's LightningModule, untouched, reports what
it logs through `trainyard.core.lightning.TrainyardCallback` (compared with Lightning's own
CSVLogger in the same run), resumes from the checkpoint the callback registered, and runs as an
ASHA search under `trainyard run` against the real Master.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import (
    EXAMPLES,
    cli_env,
    local_reports,
    run_by_hand,
    run_cli,
    trial_progress,
)

pytestmark = pytest.mark.integration

LIGHTNING = EXAMPLES / "scripts" / "lightning"


def _by_hand(folder: Path, epochs: int) -> str:
    command = [sys.executable, str(LIGHTNING / "train.py"), "--epochs", str(epochs)]
    return run_by_hand([*command, "--batches-per-epoch", "10"], folder)


def _csv_logged(folder: Path) -> list[tuple[str, int, dict[str, float]]]:
    """Lightning's CSVLogger rows as (kind, step, values); its step is global_step - 1."""
    path = next((folder / "trainyard-local" / "lightning-logs").rglob("metrics.csv"))
    rows = []
    for row in csv.DictReader(path.open()):
        values = {k: float(v) for k, v in row.items() if k not in ("epoch", "step") and v}
        kind = "validation" if any(k.startswith("val_") for k in values) else "training"
        rows.append((kind, int(row["step"]) + 1, values))
    return rows


def test_the_callback_reports_what_the_module_logs_and_resumes(tmp_path: Path) -> None:
    _by_hand(tmp_path, epochs=2)
    reported = local_reports(tmp_path)
    assert reported == _csv_logged(tmp_path)
    assert [(kind, step) for kind, step, _ in reported] == [
        ("training", 5), ("training", 10), ("validation", 10),
        ("training", 15), ("training", 20), ("validation", 20),
    ]  # fmt: skip
    assert {"val_loss", "val_accuracy"} == set(reported[2][2])
    checkpoints = tmp_path / "trainyard-local" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000010", "step-00000020"]

    output = _by_hand(tmp_path, epochs=3)  # one more epoch: resumes after step 20
    assert "Restored all states from the checkpoint" in output
    assert "step-00000020" in output
    new = local_reports(tmp_path)[len(reported) :]
    assert [(kind, step) for kind, step, _ in new] == [
        ("training", 25), ("training", 30), ("validation", 30),
    ]  # fmt: skip


def test_the_lightning_example_runs_as_an_asha_search(tmp_path: Path) -> None:
    config = yaml.safe_load((LIGHTNING / "experiment.yaml").read_text())
    config["entrypoint"]["workdir"] = str(LIGHTNING)
    config["entrypoint"]["command"] = "python train.py --epochs 2 --batches-per-epoch 10"
    config["searcher"]["max_trials"] = 2
    config["searcher"]["asha"]["min_batches"] = 10
    file = tmp_path / "lightning.yaml"
    file.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    result = run_cli(["run", str(file)], cli_env(home), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "best val_accuracy at batch" in result.stdout

    trials = trial_progress(home)
    assert len(trials) == 2
    for state, validated_at, num_checkpoints in trials:
        assert state in {"COMPLETED", "STOPPED"}
        assert validated_at[0] == 10 and num_checkpoints >= 1
        assert validated_at == [10, 20] if state == "COMPLETED" else validated_at == [10]

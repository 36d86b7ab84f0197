"""`trainyard export` refuses what it cannot export with a message that says what to do."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import StoredExperiment
from tests.integration.helpers import cli_env, run_cli


def _export(stored: StoredExperiment, trial_id: int, out: Path) -> tuple[int, str]:
    result = run_cli(
        ["export", str(trial_id), "--onnx", str(out)], cli_env(stored.home), timeout=120
    )
    assert "Traceback" not in result.stderr
    return result.returncode, " ".join(result.stderr.split())  # rich wraps long lines


def test_a_trial_without_checkpoint_is_refused(stored: StoredExperiment, tmp_path: Path) -> None:
    errored = stored.trial_ids[1]
    code, message = _export(stored, errored, tmp_path / "out")
    assert code == 2
    assert message == (
        f"error: trial {errored} (number 1 of experiment 'literal') has no checkpoint to "
        "export yet; a trial writes one every `checkpoint.period` and when it ends, so export "
        "it once it has trained that far, or pick a trial that has one in the checkpoint "
        "column of `trainyard show`"
    )
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_gone_from_disk_is_named(stored: StoredExperiment, tmp_path: Path) -> None:
    code, message = _export(stored, stored.trial_ids[0], tmp_path / "out")
    assert code == 2
    assert message == (f"error: checkpoint {stored.checkpoint} does not exist or is not a folder")

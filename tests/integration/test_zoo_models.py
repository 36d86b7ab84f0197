"""Particle Transformer and PFN train through `trainyard run` from the example file: the
built-in inputs stage the Lorentz vectors ParT takes, and each model is fed its own roles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.integration.helpers import cli_env, last_validation, run_cli, short_training

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "part-top.yaml"
TINY = {
    "particle-transformer": {
        "embed_dims": [16, 16],
        "pair_embed_dims": [8],
        "num_heads": 2,
        "num_layers": 1,
        "num_cls_layers": 1,
    },
    "pfn": {"phi_sizes": [16, 32], "f_sizes": [16]},
}


@pytest.mark.parametrize("model", sorted(TINY))
def test_a_tiny_model_trains_from_the_part_example(
    model: str, toy_data, write_experiment, tmp_path
) -> None:
    config = yaml.safe_load(EXAMPLE.read_text())
    config["model"] = {"name": model, "options": TINY[model]}
    config["data"].update(
        train=str(toy_data / "train" / "*.parquet"),
        val=str(toy_data / "val" / "*.parquet"),
        max_particles=32,
    )
    short_training(config)
    home = tmp_path / "home"
    result = run_cli(["run", str(write_experiment(config))], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "experiment 1 COMPLETED" in result.stdout
    staged = [p for p in (home / "cache" / "staged").iterdir() if not p.name.startswith(".")]
    # Training and validation, each with the vectors only when the model takes them.
    assert [any(p.glob("vectors.*")) for p in staged] == [model == "particle-transformer"] * 2
    metrics = last_validation(home, 1)
    print(model, "val_auc after 24 steps:", metrics["val_auc"])
    assert np.isfinite(metrics["val_loss"]) and metrics["val_auc"] > 0.6

"""`trainyard run` then `trainyard export` on its trial: the files CMSSW would get run in ONNX
Runtime and give the trained model's probabilities, with weaver's preprocessing JSON."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from tests.integration.helpers import cli_env, run_cli
from trainyard.data.features import builtin_weaver_config, load_jet_arrays
from trainyard.export.preprocess import preprocess_json
from trainyard.models import build_model

pytestmark = pytest.mark.integration


def test_a_trained_trial_exports_to_files_onnxruntime_runs(
    finished_run, toy_data, tmp_path
) -> None:
    home = finished_run.home  # ParticleNet-Lite, k=4, 16 particles, 40 batches

    out = tmp_path / "export"
    result = run_cli(["export", "1", "--onnx", str(out), "--checkpoint", "best"], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr
    # Validations at 20 and 40 both have a checkpoint; the line names the one taken.
    assert "exported trial 1 (number 0 of experiment 'e2e') at step" in result.stdout
    step = int(result.stdout.split(" at step ")[1].split()[0])
    assert step in (20, 40)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "preprocess.json"]

    # The JSON describes the built-in inputs of 16 particles (equal to weaver-core's own
    # export for that config: tests/export/test_preprocess.py).
    written = json.loads((out / "preprocess.json").read_text())
    assert written == preprocess_json(builtin_weaver_config(max_particles=16))

    # ONNX Runtime on validation jets gives the checkpoint's eval softmax.
    model = build_model("particlenet-lite", num_features=7, num_classes=2, options={"k": 4})
    checkpoint = next(home.glob(f"experiments/*/trials/*/checkpoints/step-{step:08d}"))
    model.load_state_dict(torch.load(checkpoint / "state.pt", weights_only=True)["model"])
    jets = load_jet_arrays(str(toy_data / "val" / "*.parquet"), max_particles=16)
    tensors = (jets.points_NCP[:50], jets.features_NCP[:50], jets.mask_N1P[:50])
    session = onnxruntime.InferenceSession(
        str(out / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    assert names == written["input_names"] == ["pf_points", "pf_features", "pf_mask"]
    (probabilities,) = session.run(["softmax"], dict(zip(names, tensors, strict=True)))
    with torch.no_grad():
        logits = model.eval()(*(torch.from_numpy(t) for t in tensors))
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), atol=1e-5)

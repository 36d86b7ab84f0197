"""The packing benchmark runs end to end (--quick, on CPU) and writes its JSON and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.packing import main


def test_quick_run_writes_results_for_every_model_and_pack_size(tmp_path: Path) -> None:
    assert main(["--quick", "--device", "cpu", "--out", str(tmp_path), "--tag", "dry"]) == 0
    result = json.loads((tmp_path / "packing-cpu-dry.json").read_text())
    rows = {(row["model"], row["k"]) for row in result["rows"]}
    assert rows == {(m, k) for m in ("particlenet-lite", "particlenet") for k in (1, 2)}
    assert all(row["packed"]["median"] > 0 and row["solo"]["median"] > 0 for row in result["rows"])
    assert result["settings"]["device"] == "cpu" and result["machine"]["device_name"] == "cpu"
    table = (tmp_path / "packing-cpu-dry.md").read_text()
    assert "| particlenet | 2 |" in table and "load average" in table

"""benchmarks/dashboard.py fills a store, serves the real dashboard and measures its page."""

import json
from pathlib import Path

from benchmarks.dashboard import main


def test_small_run_measures_the_page_and_its_bytes(tmp_path: Path) -> None:
    args = ["--trials", "12", "--reports", "15", "--repeats", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    result = json.loads((tmp_path / "dashboard.json").read_text())
    assert (result["trials"], result["reports_per_trial"], result["repeats"]) == (12, 15, 2)
    page = result["page"]
    assert 0 < page["min_s"] <= page["median_s"] <= page["max_s"]
    assert 0 < result["html_gzip_bytes"] < result["html_bytes"]
    assert result["assets_bytes"] > 1_000_000  # ECharts and htmx were served and counted
    assert "| total (goal <= 2,000,000) |" in (tmp_path / "dashboard.md").read_text()

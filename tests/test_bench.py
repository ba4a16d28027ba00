"""The bench runner: one cheap part end to end writes the JSON (speeds are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run_all

pytestmark = pytest.mark.slow
ROW_KEYS = {"benchmark", "metric", "value", "unit", "goal", "notes"}


def test_quick_run_of_one_part_writes_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rows = run_all.main(out=out, quick=True, only=["render_bench.memory"])
    data = json.loads(out.read_text())
    assert {"machine", "cpus", "gpu", "quick", "only", "total_s", "load_avg_at_start"} <= set(data["meta"])
    assert data["meta"]["quick"] is True and data["rows"] == rows
    assert all(set(r) == ROW_KEYS for r in rows)
    assert [r["metric"] for r in rows] == ["peak_rss_growth", "total wall time"]
    assert "peak_rss_growth" in capsys.readouterr().out  # the table


def test_unknown_part_is_named() -> None:
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        run_all.main(only=["nope"])

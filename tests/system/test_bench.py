"""The bench runner: one cheap part end to end writes the JSON (speeds are not asserted); README's table is
generated from that JSON between its markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import readme_table, run_all

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {"benchmark", "metric", "value", "unit", "goal", "notes", "load_avg", "time"}


@pytest.mark.slow
def test_quick_run_of_one_part_writes_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, readme = tmp_path / "bench.json", tmp_path / "README.md"
    readme.write_text(f"# R\n{readme_table.START}\nold\n{readme_table.END}\n")
    rows = run_all.main(out=out, quick=True, only=["render_bench.memory"], readme=readme)
    data = json.loads(out.read_text())
    assert {"machine", "cpus", "gpu", "quick", "only", "total_s", "load_avg_at_start"} <= set(data["meta"])
    assert data["meta"]["quick"] is True and data["rows"] == rows
    assert all(set(r) == ROW_KEYS for r in rows)
    assert [r["metric"] for r in rows] == ["peak_rss_growth", "total wall time"]
    assert "peak_rss_growth" in capsys.readouterr().out  # the table
    assert "| render memory 56 atoms 224px mesh | peak_rss_growth |" in readme.read_text()


def test_readme_table_is_rewritten_between_markers_only(tmp_path: Path) -> None:
    data = {
        "meta": {"time": "2026-11-27T03:00:00Z", "load_avg_at_start": 1.5, "cpus": 2, "gpu": "no GPU", "quick": False},
        "rows": [
            {"benchmark": "ray data", "metric": "speedup_2_vs_1", "value": 1.9, "unit": "x", "goal": ">= 1.8",
             "notes": "", "load_avg": 0.42, "time": "2026-11-26T02:00:00Z"},
            {"benchmark": "quickstart", "metric": "peak PSS", "value": 3500, "unit": "MiB", "goal": "<= 3,072",
             "notes": "a | b"},
            {"benchmark": "bench", "metric": "total wall time", "value": 12.0, "unit": "s", "goal": "", "notes": ""},
        ],
    }  # fmt: skip
    results, readme = tmp_path / "bench.json", tmp_path / "README.md"
    results.write_text(json.dumps(data))
    before, after = "# Title\nprose before\n", "\nprose after | kept\n"
    readme.write_text(f"{before}{readme_table.START}\n| old | table |\n{readme_table.END}{after}")
    readme_table.update_readme(readme, results)
    text = readme.read_text()
    assert text.startswith(before + readme_table.START) and text.endswith(readme_table.END + after)
    assert "| old | table |" not in text
    lines = text.split(readme_table.START)[1].split(readme_table.END)[0].strip().splitlines()
    assert lines[2] == "| benchmark | metric | value | goal | met? | load avg | date | notes |"
    assert lines[4] == "| ray data | speedup_2_vs_1 | 1.9 x | >= 1.8 | yes | 0.42 | 2026-11-26 |  |"
    assert lines[5] == "| quickstart | peak PSS | 3,500 MiB | <= 3,072 | no | 1.5 | 2026-11-27 | a \\| b |"
    assert lines[6] == "| bench | total wall time | 12 s |  |  | 1.5 | 2026-11-27 |  |"
    readme_table.update_readme(readme, results)
    assert readme.read_text() == text, "rewriting is idempotent"


def test_readme_without_markers_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bench-table:start"):
        readme_table.rewrite("# no markers\n", {"rows": []})


def test_unknown_part_is_named() -> None:
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        run_all.main(only=["nope"])


def test_merge_puts_a_rerun_part_in_place_and_keeps_the_rest() -> None:
    def r(bench: str, metric: str, value: float, when: str) -> dict:
        return {"benchmark": bench, "metric": metric, "value": value, "unit": "x", "goal": "", "notes": "",
                "load_avg": 0.5, "time": when}  # fmt: skip

    old = {
        "meta": {"time": "T0", "load_avg_at_start": 0.8, "only": []},
        "rows": [
            r("a", "m", 1.0, "T0"),
            r("sim", "rate", 2.0, "T0"),
            r("z", "m", 3.0, "T0"),
            r("bench", "total", 9, "T0"),
        ],
    }
    new = [r("sim", "rate", 5.0, "T1"), r("sim", "efficiency", 0.6, "T1"), r("bench", "total", 1, "T1")]
    merged = run_all.merge_rows(old, new, ["render_bench.ray_simulated"], {"time": "T1", "load_avg_at_start": 0.3})
    assert [(x["benchmark"], x["metric"], x["value"], x["time"]) for x in merged["rows"]] == [
        ("a", "m", 1.0, "T0"), ("sim", "rate", 5.0, "T1"), ("z", "m", 3.0, "T0"), ("bench", "total", 9, "T0"),
        ("sim", "efficiency", 0.6, "T1"),
    ]  # fmt: skip
    assert merged["meta"]["time"] == "T0" and merged["meta"]["merged"] == [
        {"parts": ["render_bench.ray_simulated"], "time": "T1", "load_avg": 0.3}
    ]
    assert old["rows"][1]["value"] == 2.0, "the old results are not changed in place"


@pytest.mark.slow
def test_cpu_train_step_part_runs_old_and_new_side_by_side() -> None:
    from bench import train_bench

    rows = train_bench.cpu_step(quick=True)
    metrics = {r["metric"] for r in rows}
    assert {"images_per_s_old_nchw_1t_64px", "images_per_s_new_channels_last_1t_64px"} <= metrics  # quick: 1 thread
    ratios = [r for r in rows if r["metric"].startswith("ratio_channels_last_vs_nchw")]
    assert ratios and all(r["value"] > 0 and r["goal"] == ">= 1.5" for r in ratios)
    n = train_bench.FOLD_IMAGES
    assert {f"epoch_s_{n}_images_64px", f"decode_s_{n}_images_64px"} <= metrics

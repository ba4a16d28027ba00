from pathlib import Path

import pytest
from typer.testing import CliRunner

from crystalvision.app.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
COMMANDS = [
    [],
    ["ingest"],
    ["snapshot"],
    ["render"],
    ["train"],
    ["evaluate"],
    ["tune"],
    ["register"],
    ["predict"],
    ["serve"],
    ["watch"],
    ["bench"],
    ["pipeline"],
    ["pipeline", "run"],
    ["pipeline", "validate"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(cmd: list[str]) -> None:
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_snapshot_command_prints_manifest(cv_home) -> None:
    result = runner.invoke(app, ["snapshot"])
    assert result.exit_code == 0, result.output
    assert '"n_flagged": 6' in result.output and "2025.02.12.post" in result.output


def test_snapshot_command_lists_the_bundled_snapshots_and_shows_one_by_name(cv_home) -> None:
    import json

    result = runner.invoke(app, ["snapshot"])
    listing = json.loads(result.output)
    assert listing["default"]["snapshot_id"].startswith("lmno-2025.02.12.post-")
    space, lmno = listing["bundled"]["lmno-space"], listing["bundled"]["lmno"]
    assert (space["n_records"], space["n_usable"], space["verified"]) == (907, 883, True)
    assert (lmno["n_records"], lmno["n_usable"], lmno["verified"]) == (68, 62, True)
    one = runner.invoke(app, ["snapshot", "lmno-space"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.output)["query"] == {"chemsys": "Li-Mn-Ni-O", "subsystems": True}
    bad = runner.invoke(app, ["pipeline", "validate", "pipelines/quickstart.yaml", "--set", "snapshot.name=lmno-spce"])
    assert bad.exit_code == 2 and "['lmno', 'lmno-space']" in bad.output and "Traceback" not in bad.output


def test_bad_config_exits_2_with_one_line(tmp_path) -> None:
    bad = tmp_path / "b.yaml"
    bad.write_text("name: x\nbogus: 1\n")
    result = runner.invoke(app, ["pipeline", "validate", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'bogus'" in result.output
    assert "Traceback" not in result.output


def test_ingest_without_key_names_the_fix(cv_home, monkeypatch) -> None:
    for var in ("MP_API_KEY", "PMG_MAPI_KEY", "CRYSTALVISION_MP_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    result = runner.invoke(app, ["ingest", "--chemsys", "Li-O"])
    assert result.exit_code == 2
    assert "MP_API_KEY" in result.output
    assert not (cv_home / "snapshots").exists(), "nothing half-written"


def test_bench_runs_from_any_directory_without_touching_sys_path(cv_home, tmp_path, monkeypatch) -> None:
    """A --quick (smoke) run writes under the home by default, never over the committed bench/results/bench.json."""
    import json
    import sys

    committed = ROOT / "bench" / "results" / "bench.json"
    before_results = committed.read_bytes()
    monkeypatch.chdir(tmp_path)  # not the checkout: the runner is found beside the package, not in the cwd
    before = list(sys.path)
    result = runner.invoke(app, ["bench", "--quick", "--only", "render_bench.memory"])
    assert result.exit_code == 0, result.output
    assert sys.path == before
    assert committed.read_bytes() == before_results
    rows = json.loads((cv_home / "bench" / "bench-quick.json").read_text())["rows"]
    assert [r["metric"] for r in rows] == ["peak_rss_growth", "total wall time"]


def test_cli_and_jobs_share_one_command_table() -> None:
    import importlib

    from crystalvision.app.commands import COMMANDS

    for name in COMMANDS:
        job = importlib.import_module(f"jobs.{name}")
        assert "run_command" in job.main.__code__.co_names, name  # the job is a skin over the table
    cli_names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert set(COMMANDS) - {"pipeline"} <= cli_names


def test_predict_refuses_an_output_format_it_cannot_print(tmp_path, cv_home) -> None:
    """`--output` takes only the formats predict prints; anything else is one clear error before a model loads."""
    cif = tmp_path / "a.cif"
    cif.write_text("data_a\n")
    result = runner.invoke(app, ["predict", str(cif), "--model", "models:/none@champion", "--output", "yaml"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())  # the error box wraps the line
    assert "Invalid value for '--output'" in text and "'yaml' is not one of 'table', 'json'" in text
    assert "Traceback" not in result.output


def test_pipeline_validate_numbers_folds_one_way(cv_home, caplog) -> None:
    """The warnings about classes unseen in training name each fold by its number in the split table (the number
    MLflow's fold runs carry, fold0..fold4), and that fold's row lists the same classes."""
    import logging
    import re

    with caplog.at_level(logging.WARNING, logger="crystalvision.data.folds"):
        result = runner.invoke(app, ["pipeline", "validate", "pipelines/paper-grouped.yaml"])
    assert result.exit_code == 0, result.output
    blocks: dict[int, str] = {}  # fold number in the table -> its row and the lines under it
    current = None
    for line in result.output[result.output.index("resolved split:") :].splitlines():
        row = re.match(r"\s*(\d+)\s+\d+\s+\d+\s+\d+\s", line)
        current = int(row.group(1)) if row else current
        if current is not None:
            blocks[current] = blocks.get(current, "") + line + "\n"
    assert sorted(blocks) == [0, 1, 2, 3, 4]
    warnings = [r.getMessage() for r in caplog.records if "no training example" in r.getMessage()]
    assert warnings
    for message in warnings:
        fold = int(re.search(r"\bfold (\d+)\b", message).group(1))
        first_unseen = re.search(r"no training example: \['([^']+)'", message).group(1)
        assert fold in blocks and first_unseen in blocks[fold], (message, blocks.get(fold))

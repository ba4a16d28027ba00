"""What a person sees: library output goes to the log file, progress reads well in a file, summary is short."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from crystalvision.app.console import StageDisplay, milestone
from crystalvision.app.summary import MAX_LINES, env_command, mlflow_pointer, summary_renderable
from crystalvision.core import progress

ROOT = Path(__file__).resolve().parents[2]


def test_quiet_output_sends_library_and_child_output_to_the_log(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import logging, os, subprocess, sys
        sys.path.insert(0, {str(ROOT / "platform")!r})
        from pathlib import Path
        from crystalvision.app.console import quiet_output
        logging.basicConfig(level=logging.INFO)
        with quiet_output(Path({str(tmp_path)!r}), "demo") as out:
            logging.getLogger("ray").warning("PlacementGroupCleaner noise")
            print("a library print")
            os.write(2, b"core_worker.cc: C++ noise\\n")
            subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child noise\\\\n')"], check=True)
            out.console.print("progress for people")
            out.stdout.write('{{"json": 1}}\\n')
        print("after the block")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "progress for people"
    assert proc.stdout.splitlines() == ['{"json": 1}', "after the block"]
    (log_file,) = (tmp_path / "logs").glob("*-demo-*.log")
    text = log_file.read_text()
    for noise in ("PlacementGroupCleaner noise", "a library print", "C++ noise", "child noise"):
        assert noise in text
    assert "progress for people" not in text


def test_plain_progress_prints_milestones_without_carriage_returns() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=100)
    with StageDisplay(console) as display, progress.listening(display):
        for n in range(0, 101, 5):
            progress.emit("render", n, 100, unit="img")
        for epoch in (1, 2, 3):
            progress.emit("train", epoch, 3, unit="epoch", loss=1.0 / epoch, val_acc=0.5)
        progress.finish("train", best_epoch=3)
    out = buf.getvalue()
    assert "\r" not in out
    render_lines = [line for line in out.splitlines() if line.startswith("render")]
    assert len(render_lines) == 5  # 0, 25, 50, 75, 100 %
    assert "render    100/100 img" in render_lines[-1]
    assert "train     3/3 epoch" in out and "val_acc 0.5" in out
    assert "train     done in" in out and "best_epoch 3" in out


def test_a_stage_that_runs_again_prints_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """k folds train one after the other under one stage name: each fold's epochs print, with seconds per epoch."""
    clock = iter(range(0, 10_000, 30))  # every event 30 s after the previous one
    monkeypatch.setattr("crystalvision.app.console.time.perf_counter", lambda: float(next(clock)))
    buf = io.StringIO()
    with StageDisplay(Console(file=buf, force_terminal=False, width=100)) as display, progress.listening(display):
        for _fold in range(2):
            for epoch in (1, 2, 3, 4):
                progress.emit("train", epoch, 4, unit="epoch")
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("train")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"] * 2
    assert lines[4].endswith("(30 s/epoch)") and "0.0 epoch/s" not in buf.getvalue()


def test_milestones_are_quarters() -> None:
    assert [milestone(d, 8) for d in (0, 1, 2, 4, 6, 8, 9)] == [0, 0, 1, 2, 3, 4, 4]
    assert milestone(7, None) == 7


def test_listener_failure_never_breaks_a_stage() -> None:
    def broken(event: progress.ProgressEvent) -> None:
        raise RuntimeError("display broke")

    with progress.listening(broken):
        progress.emit("render", 1, 2)  # must not raise
    assert not progress.active()


def test_summary_fits_and_names_baselines_model_and_pointers() -> None:
    metrics = {
        "test_r2_band_gap": 0.31,
        "baseline_dummy_r2_band_gap": -0.01,
        "baseline_1nn_r2_band_gap": 0.2,
        "test_acc_crystal_system": 0.52,
        "baseline_dummy_acc_crystal_system": 0.4,
        "baseline_1nn_acc_crystal_system": 0.45,
        "test_acc_spacegroup": 0.3,
        "test_r2_energy_above_hull": 0.1,
        **{f"val_extra_{i}": float(i) for i in range(300)},
    }
    result = {
        "pipeline": "quickstart",
        "snapshot_id": "lmno-abc",
        "n_structures": 54,
        "n_dropped_flagged": 6,
        "render": {"render_n_images": 432, "render_n_new": 0, "render_n_quarantined": 0},
        "run_id": "r123",
        "metrics": metrics,
        "registry": {
            "model_name": "cv",
            "challenger_version": "2",
            "promoted": False,
            "champion_version": "1",
            "reason": "not better",
        },
    }
    buf = io.StringIO()
    Console(file=buf, force_terminal=False, width=110).print(
        summary_renderable(
            result,
            tracking_uri="sqlite:////tmp/x/mlflow.db",
            report_path="/tmp/r/report.html",
            log_path="/tmp/l.log",
            label_source="band gap: CGCNN surrogate",
        )
    )
    text = buf.getvalue()
    assert len(text.splitlines()) <= MAX_LINES
    assert "val_extra" not in text
    assert "0.310" in text and "-0.010" in text and "0.200" in text  # model, majority, 1-NN
    assert "cv v2 -> challenger; champion stays v1" in text
    assert "mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db" in text
    assert "/tmp/r/report.html" in text and "/tmp/l.log" in text


def test_mlflow_pointer_links_a_server_run() -> None:
    assert mlflow_pointer("http://127.0.0.1:5000/", "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"


def test_the_mlflow_ui_command_of_the_summary_runs_as_printed(monkeypatch, tmp_path) -> None:
    """Activated (this environment's scripts first on PATH): bare `mlflow`; otherwise this environment's own
    `mlflow`, which runs, never a bare name the shell cannot find or another environment's."""
    scripts = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{scripts}:/usr/bin:/bin")
    assert env_command("mlflow") == "mlflow"
    assert mlflow_pointer("sqlite:////tmp/x/mlflow.db", None, None).startswith("mlflow ui --backend-store-uri ")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    printed = mlflow_pointer("sqlite:////tmp/x/mlflow.db", None, None).split(" ui ")[0]
    assert printed != "mlflow"
    done = subprocess.run([printed, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "version" in done.stdout, done.stderr


def test_summary_of_a_kfold_run_shows_mean_and_std() -> None:
    buf = io.StringIO()
    metrics = {
        "test_acc_crystal_system_mean": 0.45,
        "test_acc_crystal_system_std": 0.05,
        "baseline_dummy_acc_crystal_system_mean": 0.4,
        "baseline_dummy_acc_crystal_system_std": 0.02,
    }
    Console(file=buf, force_terminal=False, width=110).print(
        summary_renderable({"pipeline": "paper-grouped", "metrics": metrics}, tracking_uri="sqlite:///x.db")
    )
    assert "0.450 ± 0.050" in buf.getvalue() and "0.400 ± 0.020" in buf.getvalue()


def test_summary_sets_per_structure_model_numbers_beside_every_baseline_and_imbalance_metrics() -> None:
    from crystalvision.app.summary import metrics_table

    metrics = {"test_acc_crystal_system": 0.9, "test_struct_acc_crystal_system": 0.52,
               "test_struct_balanced_acc_crystal_system": 0.27, "test_struct_macro_f1_crystal_system": 0.21,
               "baseline_dummy_acc_crystal_system": 0.35, "baseline_dummy_balanced_acc_crystal_system": 0.14,
               "baseline_tabular_acc_crystal_system": 0.66, "baseline_tabular_balanced_acc_crystal_system": 0.5,
               "cgcnn_test_acc_crystal_system": 0.43}  # fmt: skip
    buf = io.StringIO()
    Console(file=buf, force_terminal=False, width=110).print(metrics_table(metrics))
    lines = buf.getvalue().splitlines()
    assert lines[0].split() == ["test", "set", "model/structure", "majority", "trees", "CGCNN"]
    assert lines[1].split()[-4:] == ["0.520", "0.350", "0.660", "0.430"] and "0.900" not in buf.getvalue()
    assert "balanced acc" in lines[2] and lines[2].split()[-4:] == ["0.270", "0.140", "0.500", "-"]
    assert "macro-F1" in lines[3]


def _printed(renderable, width: int = 80) -> str:
    buf = io.StringIO()
    Console(file=buf, force_terminal=False, width=width).print(renderable)
    return buf.getvalue()


LONG_REASON = (
    "per-target gate on 40 validation structures (Holm over 4 heads, alpha 0.05): band_gap -1.107 vs -1.093 "
    "(same), crystal_system 0.525 vs 0.500 (same), spacegroup 0.300 vs 0.275 (same): no head better"
)


def test_summary_wraps_the_registry_reason_whole_under_its_label() -> None:
    registry = {"model_name": "cv", "challenger_version": "3", "promoted": False, "champion_version": "2"}
    result = {"pipeline": "quickstart", "snapshot_id": "s", "n_structures": 5, "registry": registry}
    text = _printed(summary_renderable(result | {"registry": registry | {"reason": LONG_REASON}}, tracking_uri="x"))
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("model     cv v3 -> challenger"))
    block = [lines[first]] + [line for line in lines[first + 1 :] if line.startswith(" " * 10)]
    assert len(block) >= 3 and all(len(line) <= 80 for line in block)
    assert " ".join(" ".join(line[10:].split()) for line in block).endswith(f"({LONG_REASON})")


def test_tune_and_render_summaries_are_short_and_name_what_they_made() -> None:
    from crystalvision.app.summary import result_summary

    metrics = {"test_r2_band_gap": 0.2, "baseline_dummy_r2_band_gap": -0.01, "test_acc_spacegroup": 0.3}
    metrics |= {f"leakage_extra_{i}": float(i) for i in range(300)}
    render = {"render_n_images": 12, "render_n_new": 0, "render_n_skipped": 12, "render_n_quarantined": 0}
    sweep = {
        "sweep": "tune-quickstart-0123abcd",
        "metric": "val_loss",
        "experiment_id": "1",
        "snapshot_id": "lmno-abc",
        "n_structures": 6,
        "render": render,
        "n_trials": 2,
        "n_errors": 0,
        "n_stopped_early": 1,
        "best_trial_id": "9e8a8_00001",
        "best_run_id": "r42",
        "best_config": {"lr": 0.00031, "w_band_gap": 1.2},
        "best_metrics": {"val_loss": 1.2345},
        "test_metrics": metrics,
        "registry": {"model_name": "cv", "challenger_version": "1", "promoted": True, "reason": LONG_REASON},
    }
    text = _printed(result_summary(sweep, "/tmp/l.log"), width=100)
    assert len(text.splitlines()) <= MAX_LINES and "{" not in text and "leakage_extra" not in text
    assert "sweep tune-quickstart-0123abcd finished" in text and "2 trials: 0 failed, 1 stopped early" in text
    assert "trial 9e8a8_00001: lr 0.00031, val_loss 1.23" in text and "0.200" in text
    assert "model     cv v1 -> champion (per-target gate" in text and "run       r42" in text
    made = render | {"render_uri": "/h/store/renders/abc-def", "render_total_s": 4.2, "render_n_quarantined": 1}
    text = _printed(result_summary(made, "/tmp/l.log"), width=100)
    assert len(text.splitlines()) <= 8 and "{" not in text
    assert "12 images (0 new, 12 already there), 1 structures quarantined in 4.2 s" in text
    assert "/h/store/renders/abc-def/quarantine.json" in text and "/tmp/l.log" in text
    assert result_summary({"snapshot": "/x"}) is None  # anything else stays JSON

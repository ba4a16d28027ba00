"""Smoke tests of the bench scripts no other test runs: the Ray wheel repack and the impostor study's interval."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_repack_ray_drops_java_and_dashboard_build_and_their_record_lines(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("repack_ray", BENCH / "device" / "repack_ray.py")
    repack_ray = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repack_ray)
    names = ["ray/__init__.py", "ray/jars/ray.jar", "ray/dashboard/client/build/index.js", "ray/dashboard/head.py"]
    record = "".join(f"{n},sha256=x,1\n" for n in names)
    src, dst = tmp_path / "ray.whl", tmp_path / "slim.whl"
    with zipfile.ZipFile(src, "w") as z:
        for n in names:
            z.writestr(n, b"x")
        z.writestr("ray-2.60.dist-info/RECORD", record)
    repack_ray.repack(str(src), str(dst))
    with zipfile.ZipFile(dst) as z:
        kept = set(z.namelist())
        left = z.read("ray-2.60.dist-info/RECORD").decode()
    assert kept == {"ray/__init__.py", "ray/dashboard/head.py", "ray-2.60.dist-info/RECORD"}
    assert "jars" not in left and "client/build" not in left and "ray/dashboard/head.py" in left


def test_impostor_paired_interval_is_zero_for_equal_sets_and_covers_a_real_gap() -> None:
    from bench.impostor_equivalence import paired_ci

    a = np.random.default_rng(0).random(200) < 0.6
    assert paired_ci(a, a) == (0.0, 0.0)
    lo, hi = paired_ci(np.ones(50, bool), np.r_[np.zeros(25, bool), np.ones(25, bool)])
    assert 0.3 < lo <= 0.5 <= hi < 0.7


def test_space_study_part_command_config_record_and_rows(tmp_path: Path) -> None:
    from bench import space_study_bench as study
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides

    root = Path(__file__).resolve().parents[2]
    for quick in (False, True):  # the command's pipeline and overrides load as the CLI would load them
        cmd = study.command(quick)
        assert cmd[1:5] == ["-m", "crystalvision.app.cli", "pipeline", "run"] and "--json" in cmd
        sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
        cfg = load_pipeline(root / cmd[5], parse_overrides(sets))
        assert cfg.snapshot.name == "lmno-space" and cfg.split.folds == (2 if quick else 5)
    full = load_pipeline(root / study.PIPELINE)
    assert (full.render.image_size, full.render.views_per_structure, full.train.epochs) == (64, 8, 12)

    summary = {
        "metrics": {"n_folds": 5.0, "pooled_n_structures": 883.0, "pooled_n_seeds": 1.0},
        "render": {"render_n_images": 7064, "render_n_new": 3532},
        "stage_seconds": {"render": 100.0, "train_fold0": 600.0, "train_fold1": 500.0, "evaluate_fold0": 60.0},
    }
    rows = {r["metric"]: r for r in study.rows_from(summary, 3000.0, quick=False)}
    assert rows["wall time"]["value"] == 3000.0 and rows["wall time"]["goal"] == "<= 5400"
    assert "883 structures, 7064 images (3532 rendered in this run), 1 seed(s)" in rows["wall time"]["notes"]
    assert rows["train time"]["value"] == 1100.0 and rows["render time"]["value"] == 100.0
    record = tmp_path / "space-grouped.json"
    study.write_record(record, summary, study.command(False), 3000.0)
    assert json.loads(record.read_text()) == summary
    assert "wall time 50.0 min" in record.with_suffix(".cmd").read_text()
    assert "crystalvision pipeline run pipelines/space-grouped.yaml --json" in record.with_suffix(".cmd").read_text()

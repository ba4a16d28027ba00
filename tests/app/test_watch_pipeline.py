"""`watch` with the real retrain step: render, train (Ray Train), evaluate and promote on a tiny config, against a
replay of the Materials Project (detection, locks and leases with a recorded retrain: test_watch.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystalvision.app.watch import watch_once
from crystalvision.core.pipeline_file import load_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_watch_end_to_end_retrains_with_the_real_pipeline(mp_api):
    """The real retrain: render, train, evaluate and promote on a tiny config."""
    cfg = load_pipeline(ROOT / "pipelines" / "watch.yaml")
    tiny = cfg.model_copy(
        update={
            "render": cfg.render.model_copy(update={"image_size": 32, "views_per_structure": 2, "num_workers": 1}),
            "train": cfg.train.model_copy(
                update={"backbone": "test_efficientnet", "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 4}
            ),
            "evaluate": cfg.evaluate.model_copy(update={"saliency": False, "baselines": False}),
            "registry": cfg.registry.model_copy(update={"model_name": "watch-e2e"}),
        }
    )
    result = watch_once(tiny)
    assert result["status"] == "retrained"
    assert result["pipeline"]["run_id"] and result["pipeline"]["registry"]
    assert watch_once(tiny)["status"] == "unchanged"

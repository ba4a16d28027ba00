from pathlib import Path

import pytest

from crystalvision.core.config import PipelineConfig
from crystalvision.core.errors import ConfigError
from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
from crystalvision.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_validates(path: Path) -> None:
    cfg = load_pipeline(path)
    assert cfg.name


def test_paper_pipeline_is_the_study_protocol() -> None:
    cfg = load_pipeline(ROOT / "pipelines/paper.yaml")
    assert (cfg.render.image_size, cfg.render.views_per_structure) == (224, 56)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.patience) == (1e-3, 16, 30)
    assert (cfg.split.protocol, cfg.split.test_fraction, cfg.split.val_fraction) == ("image", 0.15, 0.2)


def test_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'"):
        load_pipeline(bad)


def test_bad_value_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrender:\n  image_size: -1\n")
    with pytest.raises(ConfigError, match="render.image_size"):
        load_pipeline(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_pipeline(tmp_path / "list.yaml")


def test_overrides_merge_and_unknown_loss_weight() -> None:
    cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", parse_overrides(["train.epochs=1", "render.image_size=32"]))
    assert cfg.train.epochs == 1 and cfg.render.image_size == 32
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["oops"])
    with pytest.raises(ValueError, match="unknown loss weight"):
        PipelineConfig(name="x", train={"loss_weights": {"gap": 1.0}})


def test_views_per_structure_is_bounded_and_an_override_never_indexes_a_scalar() -> None:
    quickstart = ROOT / "pipelines/quickstart.yaml"
    assert load_pipeline(quickstart, parse_overrides(["render.views_per_structure=1024"])).render.views_per_structure
    with pytest.raises(ConfigError, match=r"render\.views_per_structure: Input should be less than or equal to 1024"):
        load_pipeline(quickstart, parse_overrides(["render.views_per_structure=100000000"]))
    for items, section in ((["render=1", "render.image_size=32"], "render"), (["a.b=x", "a.b.c.d=1"], "a.b")):
        with pytest.raises(ConfigError, match=rf"override '{items[1]}' sets a key inside '{section}'") as info:
            parse_overrides(items)
        assert "not both" in str(info.value) and "\n" not in str(info.value)


def test_config_hash_is_stable_and_sensitive() -> None:
    a, b = PipelineConfig(name="x"), PipelineConfig(name="x")
    assert a.config_hash() == b.config_hash()
    b.render.seed = 1
    assert a.config_hash() != b.config_hash()


def test_settings_from_env_hide_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MP_API_KEY", "sekret-mp-key-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekret-aws-456")
    monkeypatch.setenv("CRYSTALVISION_HOME", str(tmp_path))
    monkeypatch.setenv("CRYSTALVISION_OBJECT_STORE_URI", "s3://bucket/prefix")
    for var in ("MLFLOW_TRACKING_URI", "CRYSTALVISION_MLFLOW_TRACKING_URI"):  # mlflow.set_tracking_uri exports it
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.mp.api_key.get_secret_value() == "sekret-mp-key-123"
    assert s.storage.object_store_uri == "s3://bucket/prefix"
    assert s.tracking.mlflow_tracking_uri.startswith("sqlite:///") and str(tmp_path) in s.tracking.mlflow_tracking_uri
    dumped = repr(s) + s.model_dump_json()
    assert "sekret-mp-key-123" not in dumped and "sekret-aws-456" not in dumped


def test_the_space_model_trains_the_recipe_its_card_describes() -> None:
    """pipelines/space.yaml's card holds space-grouped.yaml's out-of-fold metrics: same snapshot, render and
    training recipe, so a change to one without the other fails here."""
    from crystalvision.core.pipeline_file import load_pipeline

    model, folds = load_pipeline(ROOT / "pipelines/space.yaml"), load_pipeline(ROOT / "pipelines/space-grouped.yaml")
    assert model.snapshot == folds.snapshot and model.render == folds.render
    assert model.train.model_dump(exclude={"seeds"}) == folds.train.model_dump(exclude={"seeds"})
    assert model.registry.generalisation_record == str(ROOT / "docs/study/records/space-grouped.json")
    assert folds.split.folds and not model.split.folds


def test_paths_in_a_pipeline_file_resolve_against_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline file names its record and snapshot relative to itself, wherever the job runs from (a Ray job's
    package, the image's /app, another folder); a --set path is the caller's, relative to the working dir."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "conf" / "p.yaml"
    path.write_text("name: p\nsnapshot:\n  uri: snaps/a\nregistry:\n  generalisation_record: ../records/r.json\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_pipeline(path)
    assert cfg.snapshot.uri == str(tmp_path / "conf" / "snaps" / "a")
    assert cfg.registry.generalisation_record == str(tmp_path / "records" / "r.json")
    mine = load_pipeline(path, parse_overrides(["registry.generalisation_record=mine.json", "snapshot.uri=s3://b/s"]))
    assert mine.registry.generalisation_record == str(tmp_path / "elsewhere" / "mine.json")
    assert mine.snapshot.uri == "s3://b/s"
    space = load_pipeline(ROOT / "pipelines/space.yaml").registry.generalisation_record
    assert space is not None and Path(space).is_file(), "the space model's card record, from any working dir"

"""Ray Data render job: local store and S3 (moto), rerun writes nothing, bad structures are quarantined."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crystalvision.core.config import RenderConfig
from crystalvision.data.dataset import LABEL_COLUMNS, load_images, load_labels
from crystalvision.data.storage import ObjectStore
from crystalvision.render.job import RenderBatch, image_key, render_config_hash, render_dataset
from crystalvision.render.rotations import view_quaternion
from tests.support.render import good_records, ray_session  # noqa: F401  (ray_session: fixture)
from tests.support.s3 import s3_server  # noqa: F401  (fixture)

CFG = RenderConfig(image_size=32, views_per_structure=2, num_workers=2, cpus_per_worker=0.5)


@pytest.fixture(scope="module")
def records(bundled_snapshot):
    good = good_records(bundled_snapshot, 3)
    bad = good[0].model_copy(deep=True)
    bad.material_id = "mp-bad"
    bad.structure["sites"][0]["species"][0]["element"] = "Xx"
    return good, bad


def _snapshot_facts(bundled_snapshot):
    return bundled_snapshot.encoders, bundled_snapshot.manifest.content_sha256


def _state(store: ObjectStore) -> dict[str, int]:
    return {k: store.fs.get_file_info(store.path(k)).mtime_ns or 0 for k in store.list()}


@pytest.mark.usefixtures("ray_session")
def test_local_job_quarantines_and_rerun_writes_nothing(tmp_path, bundled_snapshot, records) -> None:
    good, bad = records
    store = ObjectStore(str(tmp_path / "store"))
    encoders, sha = _snapshot_facts(bundled_snapshot)
    result = render_dataset([*good, bad], encoders, sha, CFG, store)

    assert result.n_images == result.n_new == 6 and result.n_skipped == 0
    assert [q["material_id"] for q in result.quarantined] == ["mp-bad"]
    assert "Xx" in result.quarantined[0]["error"]
    assert json.loads(store.get_text(f"{result.prefix}/quarantine.json")) == result.quarantined
    manifest = json.loads(store.get_text(f"{result.prefix}/manifest.json"))
    assert manifest["render_config_hash"] == render_config_hash(CFG) and manifest["snapshot_sha256"] == sha
    assert result.prefix == f"renders/{sha[:12]}-{render_config_hash(CFG)[:12]}"

    df = load_labels(store, result.labels_key)
    assert set(LABEL_COLUMNS) <= set(df.columns) and len(df) == 6
    assert np.allclose(df["quaternion"][1], view_quaternion(CFG.seed, df["material_id"][1], 1))
    images = load_images(store, list(df["image_key"]), size=32)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert (images.reshape(6, -1).std(axis=1) > 10).all(), "every image shows atoms"
    assert not any(".tmp-" in k for k in store.list())

    before = _state(store)
    again = render_dataset([*good, bad], encoders, sha, CFG.model_copy(update={"num_workers": 1}), store)
    assert again.n_new == 0 and again.n_skipped == 6 and again.quarantined == result.quarantined
    assert _state(store) == before, "a rerun must not write any object"


def test_udf_keeps_rendering_after_a_bad_structure(tmp_path, records) -> None:
    good, bad = records
    store = ObjectStore(str(tmp_path / "store"))
    structures = {r.material_id: r.structure for r in (bad, good[1])}
    udf = RenderBatch(structures, CFG.model_dump(mode="json"), store.root, None)
    mids = np.array(["mp-bad", good[1].material_id], dtype=object)
    keys = np.array([image_key("p", m, 0) for m in mids], dtype=object)
    batch = {"material_id": mids, "view": np.array([0, 0]), "quaternion": np.eye(4)[:2], "image_key": keys}
    out = udf(batch)
    assert "Xx" in out["error"][0] and out["error"][1] == ""
    assert store.list("p") == [keys[1]]


@pytest.mark.usefixtures("ray_session")
def test_s3_job_against_moto(bundled_snapshot, records, s3_server) -> None:  # noqa: F811
    good, _ = records
    bucket = s3_server.make_bucket()
    store = ObjectStore(f"s3://{bucket}/cv", s3_server.settings())
    encoders, sha = _snapshot_facts(bundled_snapshot)
    cfg = CFG.model_copy(update={"export_png": True})  # the default shards layout, plus one PNG per image
    result = render_dataset(good[:2], encoders, sha, cfg, store)
    assert result.n_new == 4 and not result.quarantined

    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"cv/{result.prefix}/")
    keys = sorted(o["Key"] for o in listed["Contents"])
    assert sum(k.endswith(".png") for k in keys) == 4
    assert sum("/shards/" in k and k.endswith(".parquet") for k in keys) == 1
    assert {f"cv/{result.prefix}/{n}" for n in ("manifest.json", "quarantine.json")} <= set(keys)
    assert f"cv/{result.labels_key}" in keys
    df = load_labels(store, result.labels_key)
    assert load_images(store, list(df["image_key"]), size=32).shape == (4, 32, 32, 3)

    before = _state(store)
    again = render_dataset(good[:2], encoders, sha, cfg, store)
    assert again.n_new == 0 and _state(store) == before


@pytest.mark.usefixtures("ray_session")
def test_a_storage_error_inside_a_render_worker_reaches_the_driver_as_that_one_line_error(
    tmp_path, bundled_snapshot, records
) -> None:
    """A write that fails inside a Ray worker (layout files: the workers write the images) ends the job with the
    worker's StorageError and its one-line message, not Ray's traceback text."""
    from crystalvision.core.errors import StorageError
    from crystalvision.render.job import render_prefix

    good, _ = records
    store = ObjectStore(str(tmp_path / "store"))
    encoders, sha = _snapshot_facts(bundled_snapshot)
    cfg = CFG.model_copy(update={"layout": "files", "num_workers": 1, "max_task_retries": 0, "max_actor_restarts": 0})
    blocked = tmp_path / "store" / render_prefix(sha, cfg) / "images" / good[0].material_id
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the worker needs a folder")
    with pytest.raises(StorageError) as caught:
        render_dataset(good[:1], encoders, sha, cfg, store)
    message = str(caught.value)
    assert message.startswith(f"cannot write {store.uri(image_key(render_prefix(sha, cfg), good[0].material_id, 0))}")
    assert message.endswith("check the store URI and credentials") and "\n" not in message


@pytest.mark.usefixtures("ray_session")
def test_worker_errors_are_found_by_class_in_ray_tasks_and_by_either_name_in_text() -> None:
    import ray

    from crystalvision.core.errors import StorageError, raised_in_worker

    @ray.remote(max_retries=0)
    def fails() -> None:
        raise StorageError("cannot read s3://b/k; check it")

    with pytest.raises(Exception) as caught:  # RayTaskError(StorageError): its text is the worker's traceback
        ray.get(fails.remote())
    found = raised_in_worker(caught.value)
    assert type(found) is StorageError and str(found) == "cannot read s3://b/k; check it"
    for module in ("crystalvision.core.errors", "crystalvision.errors"):  # a worker on an older package too
        found = raised_in_worker(RuntimeError(f"ray::MapWorker.submit()\n  File x\n{module}.StorageError: no; fix"))
        assert type(found) is StorageError and str(found) == "no; fix"
    assert raised_in_worker(RuntimeError("ValueError: nothing of ours")) is None


@pytest.mark.usefixtures("ray_session")
def test_paper_pipeline_renders_trajectory_frames_a_step_apart(tmp_path, bundled_snapshot) -> None:
    from pathlib import Path

    from crystalvision.core.pipeline_file import load_pipeline
    from crystalvision.render.rotations import frame_angles_deg

    root = Path(__file__).resolve().parents[2]
    over = {"render": {"image_size": 32, "views_per_structure": 6, "num_workers": 1}}
    cfg = load_pipeline(root / "pipelines/paper.yaml", over).render
    assert cfg.views == "trajectory"
    good = [r for r in bundled_snapshot.records if not r.flags][:2]
    store = ObjectStore(str(tmp_path / "store"))
    result = render_dataset(good, *_snapshot_facts(bundled_snapshot), cfg, store)
    df = load_labels(store, result.labels_key)
    assert len(df) == 12
    for _, frames in df.sort_values("view").groupby("material_id"):
        angles = frame_angles_deg(np.stack(frames["quaternion"].to_list()))
        step = cfg.trajectory_step_deg
        assert abs(np.median(angles) - step) <= 0.1 * step and angles.max() < 2 * step, angles
    uniform = load_pipeline(root / "pipelines/paper-uniform.yaml", over).render
    assert uniform.views == "uniform" and render_config_hash(uniform) != render_config_hash(cfg)


def test_steady_rate_counts_only_while_every_actor_works() -> None:
    import pandas as pd

    from crystalvision.render.pool import plan, steady_rate

    # actor 1 works from t=0 at 100/s; actor 2 starts at t=5 at 100/s; both stop at t=10
    a = np.arange(0, 10, 0.01)
    b = np.arange(5, 10, 0.01)
    out = pd.DataFrame({"t_done": np.concatenate([a, b]), "actor": [1] * len(a) + [2] * len(b)})
    assert steady_rate(out) == pytest.approx(200, rel=0.02)
    assert plan(1000, RenderConfig(num_workers="auto"), 16.0) == (16, 0.5, 16)
    assert plan(1000, RenderConfig(num_workers="auto"), 2.0)[:2] == (2, 0.5)
    assert plan(5, RenderConfig(num_workers=4, cpus_per_worker=1.0), 2.0) == (4, 0.45, 8)


@pytest.mark.usefixtures("ray_session")
def test_export_png_writes_pngs_of_images_already_rendered(tmp_path, bundled_snapshot, records) -> None:
    """`export_png` switched on after a render: the images are not rendered again (the shards hold them), and each
    gets its PNG all the same, equal to the shard's pixels; a second run writes nothing."""
    from crystalvision.data.dataset import decode_png

    good, _ = records
    store = ObjectStore(str(tmp_path / "store"))
    encoders, sha = _snapshot_facts(bundled_snapshot)
    first = render_dataset(good[:2], encoders, sha, CFG, store)
    assert first.n_new == 4 and not store.list(f"{first.prefix}/images")
    cfg = CFG.model_copy(update={"export_png": True})
    again = render_dataset(good[:2], encoders, sha, cfg, store)
    assert again.n_new == 0 and again.n_skipped == 4
    labels = load_labels(store, again.labels_key)
    pngs = [image_key(again.prefix, m, int(v)) for m, v in zip(labels["material_id"], labels["view"], strict=True)]
    assert sorted(store.list(f"{again.prefix}/images")) == sorted(pngs)
    shard_pixels = load_images(store, list(labels["image_key"]), size=32)
    for png, pixels in zip(pngs, shard_pixels, strict=True):
        np.testing.assert_array_equal(decode_png(store.get_bytes(png), "png", 32), pixels)
    before = _state(store)
    render_dataset(good[:2], encoders, sha, cfg, store)
    assert _state(store) == before, "PNGs that exist are not written again"


@pytest.mark.usefixtures("ray_session")
def test_two_selections_get_two_labels_tables(tmp_path, bundled_snapshot) -> None:
    """Same snapshot, same render config, different `max_structures`: neither run reads the other's table."""
    good = good_records(bundled_snapshot, 3)
    cfg = RenderConfig(image_size=32, views_per_structure=1, num_workers=1)
    store = ObjectStore(str(tmp_path / "store"))
    sha, encoders = bundled_snapshot.manifest.content_sha256, bundled_snapshot.encoders
    small = render_dataset(good[:2], encoders, sha, cfg, store)
    large = render_dataset(good, encoders, sha, cfg, store)
    assert small.prefix == large.prefix and large.n_new == 1  # images are shared
    assert small.labels_key != large.labels_key
    assert sorted(load_labels(store, small.labels_key)["material_id"]) == sorted(r.material_id for r in good[:2])
    assert len(load_labels(store, large.labels_key)) == 3

"""render.layout: shards: parquet shards + sidecars, reruns by shard, bad shards re-rendered or named, Ray Data reads
them for training, PNG export stays lossless."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crystalvision.core.config import RenderConfig, SplitConfig
from crystalvision.core.errors import StorageError
from crystalvision.data import dataset, shards
from crystalvision.data.dataset import decode_png, image_png, load_images, load_labels, split_frame, to_ray_dataset
from crystalvision.data.storage import ObjectStore
from crystalvision.render.job import image_key, render_config_hash
from tests.support.render import good_records, ray_session, render  # noqa: F401  (ray_session: fixture)

# 32 px, 2 views: about 1 kB of pixels per structure, so 0.002 MB puts 2 structures in a shard
CFG = RenderConfig(
    image_size=32, views_per_structure=2, num_workers=1, cpus_per_worker=0.5, layout="shards", shard_mb=0.002
)


@pytest.fixture(scope="module")
def records(bundled_snapshot):
    return good_records(bundled_snapshot, 4)


def _render(records, bundled_snapshot, store, cfg=CFG):
    return render(records, bundled_snapshot, cfg, store)


def _mtimes(store: ObjectStore) -> dict[str, int]:
    return {k: store.fs.get_file_info(store.path(k)).mtime_ns or 0 for k in store.list()}


def test_layout_in_hash_only_for_shards() -> None:
    files = RenderConfig(image_size=32, layout="files")
    assert render_config_hash(files) == render_config_hash(files.model_copy(update={"shard_mb": 1.0}))
    assert render_config_hash(files) == render_config_hash(files.model_copy(update={"export_png": True}))
    assert render_config_hash(files) != render_config_hash(files.model_copy(update={"layout": "shards"}))


@pytest.mark.usefixtures("ray_session")
def test_shards_written_rerun_by_shard_and_bad_shard(tmp_path, bundled_snapshot, records) -> None:
    store = ObjectStore(str(tmp_path / "store"))
    result = _render(records, bundled_snapshot, store)
    assert result.n_images == result.n_new == 8
    manifest = json.loads(store.get_text(f"{result.prefix}/manifest.json"))
    entries = manifest["shards"]
    assert manifest["layout"] == "shards" and len(entries) == 2
    assert not store.list(f"{result.prefix}/images")  # no per-image objects without export_png
    for entry in entries:
        assert shards.problem(store, entry["key"], entry) == ""
        assert entry["n_images"] == 4 and len(entry["material_ids"]) == 2

    labels = load_labels(store, result.labels_key)
    assert all(shards.is_ref(k) for k in labels["image_key"])
    images = load_images(store, labels["image_key"].tolist(), size=32)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 0
    assert decode_png(image_png(store, labels["image_key"].iloc[0]), "x").shape == (32, 32, 3)

    before = _mtimes(store)
    again = _render(records, bundled_snapshot, store)
    assert again.n_new == 0 and again.n_skipped == 8 and _mtimes(store) == before

    # truncate one shard: reading names it; a rerun renders that shard only
    bad, good = entries[0]["key"], entries[1]["key"]
    data = store.get_bytes(bad)
    store.put_bytes(bad, data[: len(data) // 2])
    shards._cache.clear()
    shards._verified.clear()
    with pytest.raises(StorageError, match=rf"{bad}.*truncated.*crystalvision render"):
        load_images(store, labels["image_key"].tolist(), size=32)
    good_mtime = _mtimes(store)[good]
    fixed = _render(records, bundled_snapshot, store)
    assert fixed.n_new == 4 and _mtimes(store)[good] == good_mtime
    assert store.get_bytes(bad) == data  # same pixels, same bytes
    np.testing.assert_array_equal(load_images(store, labels["image_key"].tolist(), size=32), images)

    # a flipped byte keeps the size but fails the checksum
    store.put_bytes(bad, data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
    shards._verified.clear()
    with pytest.raises(StorageError, match=rf"{bad} is corrupt \(fails its sha256"):
        shards.verify(store, [bad])


@pytest.mark.usefixtures("ray_session")
def test_ray_data_reads_split_from_shards_and_png_export(
    tmp_path, bundled_snapshot, records, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ObjectStore(str(tmp_path / "store"))
    cfg = CFG.model_copy(update={"export_png": True})
    result = _render(records, bundled_snapshot, store, cfg)
    labels = load_labels(store, result.labels_key)
    splits = split_frame(labels, SplitConfig(protocol="image", test_fraction=0.25, val_fraction=0.2, seed=0))

    want = load_images(store, splits.train["image_key"].tolist(), size=32)
    by_key = dict(zip(splits.train["image_key"], splits.train["band_gap"], strict=True))
    for limit in (dataset.DRIVER_DECODE_MAX_BYTES, 0):  # decoded in the driver, then (a "big" split) in Ray Data
        monkeypatch.setattr(dataset, "DRIVER_DECODE_MAX_BYTES", limit)
        rows = to_ray_dataset(splits.train, store, 32).take_all()
        assert len(rows) == len(splits.train) > 0
        got = sorted(r["image"].tobytes() for r in rows)
        assert got == sorted(w.tobytes() for w in want)
        assert sorted(r["band_gap"] for r in rows) == pytest.approx(sorted(by_key.values()))
        assert all(np.asarray(r["crystal_system_id"]).dtype == np.int64 for r in rows)

    first = labels.iloc[0]
    png = decode_png(store.get_bytes(image_key(result.prefix, first.material_id, int(first.view))), "png", 32)
    np.testing.assert_array_equal(png, load_images(store, [first.image_key], size=32)[0])

    # a torn image inside a shard (its frame's second half zeroed, the shard's size unchanged) is never trained on:
    # what training reads refuses the shard by name, and a rerun renders that shard again
    ref = str(splits.train["image_key"].iloc[0])
    bad = shards.split_ref(ref)[0]
    data, frame = store.get_bytes(bad), shards.read_images(store, bad)[ref]
    at = data.index(frame) + len(frame) // 2
    store.put_bytes(bad, data[:at] + bytes(len(frame) - len(frame) // 2) + data[at - len(frame) // 2 + len(frame) :])
    assert len(store.get_bytes(bad)) == len(data)
    for limit in (0, 512 * 1024**2):
        monkeypatch.setattr(dataset, "DRIVER_DECODE_MAX_BYTES", limit)
        shards._cache.clear()
        shards._verified.clear()
        with pytest.raises(StorageError, match=rf"{bad} is corrupt \(fails its sha256 checksum\).*render"):
            to_ray_dataset(splits.train, store, 32).take_all()
    again = _render(records, bundled_snapshot, store, cfg)
    assert again.n_new == 4 and store.get_bytes(bad) == data, "the torn shard alone is rendered again"
    assert sorted(r["image"].tobytes() for r in to_ray_dataset(splits.train, store, 32).take_all()) == got


@pytest.mark.parametrize("side", [1, 16, 224])
def test_image_frames_round_trip_and_bad_frames_are_named(side: int) -> None:
    image = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    image[: side // 2] = 255  # a white half, like a render's background
    frame = shards.compress(image)
    np.testing.assert_array_equal(shards.pixels(frame), image)
    np.testing.assert_array_equal(shards.pixels(frame, side), image)
    with pytest.raises(StorageError, match="not a zstd frame of a 2x2 RGB image"):
        shards.pixels(image.tobytes()[:12], 2)  # raw pixels (the old format) are not taken for an image
    with pytest.raises(StorageError, match=f"not a zstd frame of a {side + 1}x{side + 1}"):
        shards.pixels(frame, side + 1)

"""Fault injection: a render actor killed mid-batch, torn and unsynced writes, the S3 endpoint unavailable. (A Ray
Train worker killed mid-epoch: tests/learn/test_s3_checkpoints.py. A Tune driver killed mid-sweep:
tests/app/test_tune_s3.py. The MLflow server stopped and restarted while a worker logs: tests/learn/test_resume.py.)"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crystalvision.core.config import RenderConfig
from crystalvision.core.errors import ImageError, StorageError
from crystalvision.data.dataset import decode_png, load_images, load_labels
from crystalvision.data.storage import ObjectStore
from crystalvision.render.job import FAULT_ENV, image_key
from tests.support.render import good_records, ray_session, render  # noqa: F401  (ray_session: fixture)
from tests.support.s3 import FlakyEndpoint, moto_s3

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


# ---- render actor killed mid-batch -------------------------------------------------------------------------------


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.usefixtures("ray_session")  # one local Ray cluster for both render tests
def test_render_actor_killed_mid_batch_then_rerun_is_complete(cv_home, tmp_path, bundled_snapshot, monkeypatch):
    records = good_records(bundled_snapshot, 3)
    cfg = RenderConfig(image_size=32, views_per_structure=4, num_workers=1, cpus_per_worker=0.5, layout="files")
    root = tmp_path / "store"
    store = ObjectStore(str(root))
    monkeypatch.setenv(FAULT_ENV, "after=3")  # the actor process exits after its 3rd image of a 12-image batch
    try:
        render(records, bundled_snapshot, cfg, store)  # Ray Data may retry on its own
    except Exception as exc:  # or the job fails: the rerun below must then finish it
        logging.getLogger(__name__).info("first run failed as allowed: %s", str(exc)[:200])
    assert list((cv_home / "faults").glob("*.done")), "the render actor was not killed"
    # A writer thread killed between write and rename leaves a temp file (whether this kill did depends on
    # timing): plant one so that the rerun's clean-up is always checked.
    torn = next(root.rglob("*.png")).with_suffix(".png.tmp-killedwriter")
    torn.write_bytes(b"\x89PNG half")
    monkeypatch.delenv(FAULT_ENV)
    result = render(records, bundled_snapshot, cfg, store)

    assert not result.quarantined and result.n_images == 12
    files = _files(root)
    assert not [f for f in files if ".tmp-" in f], files
    pngs = sorted(f for f in files if f.endswith(".png"))
    expected = sorted(image_key(result.prefix, r.material_id, v) for r in records for v in range(4))
    assert pngs == expected, "exactly one PNG per (material, view)"
    for key in pngs:
        with Image.open(io.BytesIO(store.get_bytes(key))) as img:
            img.load()  # a partial file fails here
            assert img.size == (32, 32) and img.mode == "RGB"
    labels = load_labels(store, result.labels_key)
    assert len(labels) == 12 and not labels.duplicated(["material_id", "view"]).any()
    assert sorted(labels["image_key"]) == expected


@pytest.mark.usefixtures("ray_session")
def test_torn_png_is_rendered_again_not_trained_on(cv_home, tmp_path, bundled_snapshot):
    """A PNG cut short after the job (a torn write, a bad disk) is not 'done': the rerun renders it again."""
    records = good_records(bundled_snapshot, 2)
    cfg = RenderConfig(image_size=32, views_per_structure=2, num_workers=1, cpus_per_worker=0.5, layout="files")
    store = ObjectStore(str(tmp_path / "store"))
    first = render(records, bundled_snapshot, cfg, store)
    torn = image_key(first.prefix, records[0].material_id, 1)
    whole = store.get_bytes(torn)
    Path(store.path(torn)).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match=rf"{torn}.*not a readable image"):  # what training reads refuses it
        load_images(store, [torn], size=32)
    second = render(records, bundled_snapshot, cfg, store)
    assert (first.n_new, second.n_new, second.n_skipped) == (4, 1, 3)
    np.testing.assert_array_equal(load_images(store, [torn], size=32)[0], decode_png(whole, torn, 32))
    with Image.open(io.BytesIO(store.get_bytes(torn))) as img:
        img.load()
    assert store.exists_verified(torn, len(whole), __import__("hashlib").sha256(whole).hexdigest())
    assert not store.exists_verified(torn, len(whole) - 1, "0" * 64)


def test_local_writes_are_fsynced_and_leave_no_temp_file_on_failure(tmp_path, monkeypatch):
    store = ObjectStore(str(tmp_path / "store"))
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    store.put_bytes("a/b.bin", b"data")
    target = store.path("a/b.bin")
    assert len(synced) == 2 and ".tmp-" in synced[0] and synced[1] == os.path.dirname(target), synced

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(StorageError, match="cannot write"):
        store.put_bytes("a/c.bin", b"more")
    assert sorted(p.name for p in (tmp_path / "store" / "a").iterdir()) == ["b.bin"], "no temp file is left"


# ---- S3 endpoint unavailable ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto():
    with moto_s3() as server:
        yield server


def test_s3_outage_is_retried_until_the_endpoint_is_back(moto, caplog):
    with FlakyEndpoint(moto.port) as proxy:
        settings = moto.settings(proxy.url).model_copy(update={"s3_retry_timeout_s": 60})
        store = ObjectStore(f"s3://{moto.bucket}/faults", settings)
        store.put_bytes("before.txt", b"1")
        proxy.down()
        retrying, came_up = threading.Event(), threading.Event()

        class OnRetry(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "retrying" in record.getMessage():
                    retrying.set()

        def up_after_first_retry() -> None:  # an event, not a wall-clock guess: the S3 client has given up once
            if retrying.wait(timeout=120):
                came_up.set()
                proxy.up()

        handler = OnRetry()
        logging.getLogger("crystalvision.data.storage").addHandler(handler)
        threading.Thread(target=up_after_first_retry, daemon=True).start()
        try:
            with caplog.at_level(logging.WARNING, logger="crystalvision.data.storage"):
                store.put_bytes("during.txt", b"2")
        finally:
            logging.getLogger("crystalvision.data.storage").removeHandler(handler)
        assert came_up.is_set(), "the write cannot have succeeded while the endpoint was down"
        assert store.get_bytes("during.txt") == b"2" and store.get_bytes("before.txt") == b"1"
    assert "faults/during.txt" in moto.keys("faults/")
    assert any("unreachable" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)


def test_s3_endpoint_gone_gives_a_clear_error_in_bounded_time(moto):
    with FlakyEndpoint(moto.port) as proxy:
        settings = moto.settings(proxy.url).model_copy(update={"s3_retry_timeout_s": 2})
        store = ObjectStore(f"s3://{moto.bucket}/faults", settings)
        store.put_bytes("x.txt", b"1")
        proxy.down()
        start = time.monotonic()
        for op in (lambda: store.get_bytes("x.txt"), lambda: store.put_bytes("y.txt", b"2")):
            with pytest.raises(StorageError) as info:
                op()
            message = str(info.value)
            assert f"S3 endpoint {proxy.url} is unreachable" in message and "attempts" in message
            assert "check the endpoint URL" in message
            assert settings.aws_secret_access_key.get_secret_value() not in message
        assert time.monotonic() - start < 2 * (2 + 30), "retries must be bounded"

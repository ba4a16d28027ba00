import pytest

from crystalvision.core.config import SplitConfig
from crystalvision.core.errors import ImageError
from crystalvision.data.dataset import decode_png, load_images, load_labels, split_frame
from crystalvision.data.storage import ObjectStore
from tests.support.toy import write_toy_dataset


@pytest.fixture
def toy(tmp_path):
    store = ObjectStore(str(tmp_path / "store"))
    return store, write_toy_dataset(store, n_structures=10, views=5, size=32)


def test_grouped_split_never_shares_a_structure(toy) -> None:
    store, key = toy
    df = load_labels(store, key)
    for seed in range(5):
        s = split_frame(df, SplitConfig(protocol="grouped", seed=seed))
        ids = [set(part["material_id"]) for _, part in s.items()]
        assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
        assert sum(len(p) for _, p in s.items()) == len(df)


def test_image_split_is_the_study_protocol_and_seeded(toy) -> None:
    store, key = toy
    df = load_labels(store, key)
    a = split_frame(df, SplitConfig(protocol="image", seed=1))
    b = split_frame(df, SplitConfig(protocol="image", seed=1))
    assert a.test.equals(b.test)
    assert len(a.test) == round(0.15 * len(df)) or abs(len(a.test) - 0.15 * len(df)) <= 1
    assert a.describe()["n_images_train"] == len(a.train)


def test_load_images_and_corrupt_image(toy) -> None:
    store, key = toy
    df = load_labels(store, key)
    imgs = load_images(store, list(df["image_key"][:4]), size=32)
    assert imgs.shape == (4, 32, 32, 3) and imgs.dtype.name == "uint8"
    with pytest.raises(ImageError, match="bad.png: not a readable image"):
        decode_png(b"\x89PNG garbage", "bad.png")
    with pytest.raises(ImageError, match="expects 64x64"):
        load_images(store, [df["image_key"][0]], size=64)


def test_split_rows_are_shuffled_so_batches_mix_structures(toy) -> None:
    store, key = toy
    s = split_frame(load_labels(store, key), SplitConfig(protocol="grouped", seed=0))
    first_batch = s.train["material_id"].iloc[:8]
    assert first_batch.nunique() > 2, "a streaming shuffle buffer would otherwise see one structure at a time"

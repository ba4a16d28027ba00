"""The rendered dataset: labels table, splits (by image or grouped by structure), image loading."""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from crystalvision.core import TARGET_COLUMNS, TARGET_LABEL_COLUMNS, ImageError, SplitConfig, StorageError, target
from crystalvision.data import shards
from crystalvision.data.storage import ObjectStore

log = logging.getLogger(__name__)

# the columns a labels table must have: identity of each image, then every target's label columns
LABEL_COLUMNS = ("material_id", "view", "image_key", *TARGET_LABEL_COLUMNS)


@dataclass
class Splits:
    """Train / validation / test frames of the labels table."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    protocol: str
    seed: int

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    def describe(self) -> dict[str, Any]:
        """Sizes in images and structures, for logging."""
        out: dict[str, Any] = {"split_protocol": self.protocol, "split_seed": self.seed}
        for name, df in self.items():
            out[f"n_images_{name}"] = len(df)
            out[f"n_structures_{name}"] = int(df["material_id"].nunique())
        return out


def load_labels(store: ObjectStore, labels_key: str) -> pd.DataFrame:
    """Read the render stage's labels parquet and check its columns."""
    try:
        with store.fs.open_input_file(store.path(labels_key)) as fh:
            df = pd.read_parquet(fh)
    except FileNotFoundError as exc:
        raise StorageError(f"labels table {store.uri(labels_key)} not found; run `crystalvision render`") from exc
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise StorageError(f"labels table {store.uri(labels_key)} lacks columns {missing}; render again")
    return df.sort_values(["material_id", "view"]).reset_index(drop=True)


def split_frame(df: pd.DataFrame, cfg: SplitConfig, clusters: Any = None) -> Splits:
    """Split images: ``image`` = the study's random split; ``grouped`` = whole groups of ``split.group_by`` on one
    side (``clusters``: material id -> structure cluster, for ``structure_cluster``)."""
    if cfg.protocol == "image":
        rest, test = train_test_split(df, test_size=cfg.test_fraction, random_state=cfg.seed)
        train, val = train_test_split(rest, test_size=cfg.val_fraction, random_state=cfg.seed)
    else:
        if df["material_id"].nunique() < 3:
            raise StorageError("a grouped split needs at least 3 structures; select more or use protocol: image")
        if cfg.group_by != "material":
            from crystalvision.data.clusters import group_series

            groups = group_series(df, cfg.group_by, clusters)
            if groups.nunique() < 3:
                raise StorageError(f"a split grouped by {cfg.group_by} needs at least 3 groups; group by material")
            df = df.assign(group=groups.to_numpy())
        rest, test = _group_split(df, cfg.test_fraction, cfg.seed)
        train, val = _group_split(rest, cfg.val_fraction, cfg.seed)
        train, val, test = (x.drop(columns="group", errors="ignore") for x in (train, val, test))
    # Rows come sorted by structure; shuffle once so a streaming shuffle buffer sees every structure.
    parts = (x.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True) for x in (train, val, test))
    splits = Splits(*parts, protocol=cfg.protocol, seed=cfg.seed)
    log.info("split %s", splits.describe())
    return splits


def _group_split(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    gss = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    keep, held = next(gss.split(df, groups=df["group"] if "group" in df else df["material_id"]))
    if len(held) == 0 or len(keep) == 0:
        raise StorageError(f"grouped split with fraction {fraction} left one side empty; change the fractions")
    return df.iloc[keep], df.iloc[held]


MAX_IMAGE_SIDE = 4096
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def decode_png(data: bytes, name: str, size: int | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> RGB uint8 HxWx3; a corrupt, grayscale, huge or wrongly sized image raises ImageError."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise ImageError(
                    f"{name}: image is {width}x{height} px, larger than {MAX_IMAGE_SIDE} px a side; "
                    "resize it to the model's image size"
                )
            if img.format not in ("PNG", "JPEG"):
                raise ImageError(f"{name}: a {img.format} image, not PNG or JPEG; convert it to PNG")
            palette = img.getpalette() if img.mode == "P" else None
            if img.mode in GRAYSCALE_MODES or (palette and palette[0::3] == palette[1::3] == palette[2::3]):
                raise ImageError(
                    f"{name}: grayscale image (mode {img.mode}); the model needs RGB renders, "
                    "where colour encodes the element"
                )
            img.load()
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc}); render it again or pass a PNG") from exc
    if size is not None and arr.shape[:2] != (size, size):
        raise ImageError(f"{name}: image is {arr.shape[1]}x{arr.shape[0]} px, the model expects {size}x{size}")
    return arr


def load_images(store: ObjectStore, keys: list[str], size: int | None = None, threads: int = 8) -> np.ndarray:
    """Read and decode images (PNG objects or shard references) from the store into one uint8 NHWC array."""
    if keys and shards.is_ref(str(keys[0])):
        return np.stack(shards.load_refs(store, [str(k) for k in keys], size))

    def one(key: str) -> np.ndarray:
        return decode_png(store.get_bytes(key), store.uri(key), size)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        arrays = list(pool.map(one, keys))
    if not arrays:
        return np.zeros((0, size or 0, size or 0, 3), dtype=np.uint8)
    return np.stack(arrays)


def image_png(store: ObjectStore, key: str) -> bytes:
    """PNG bytes of one image: the object itself, or a shard image encoded (for request examples)."""
    if not shards.is_ref(key):
        return store.get_bytes(key)
    from crystalvision.data.png import encode_png

    return encode_png(shards.load_refs(store, [key])[0])


# ---- Ray Data: the splits as datasets of decoded images for Ray Train ----------------------------------------

RAY_COLUMNS = ("image", *TARGET_COLUMNS.values())
MATERIALIZE_MAX_BYTES = 2 * 1024**3  # decoded images up to this size are cached in the Ray object store
# decoded splits up to this size are decoded in the driver and put into the object store as they are: starting
# Ray Data's read and decode tasks (a worker process each) took longer than the decoding (7-9 s a split on 2 cores)
DRIVER_DECODE_MAX_BYTES = 512 * 1024**2
# training dtype of each target's label column: float32 regressions, int64 class ids
LABEL_DTYPES = {col: np.float32 if target(name).is_regression else np.int64 for name, col in TARGET_COLUMNS.items()}


def decode_batch(batch: dict[str, np.ndarray], store: ObjectStore, size: int | None) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: image keys -> uint8 NHWC images; labels cast to training dtypes."""
    keys = [str(k) for k in batch["image_key"]]
    images = [decode_png(store.get_bytes(k), store.uri(k), size) for k in keys]
    out = {"image": np.stack(images) if images else np.zeros((0, size or 0, size or 0, 3), np.uint8)}
    for col, dtype in LABEL_DTYPES.items():
        out[col] = np.asarray(batch[col], dtype=dtype)
    return out


def to_ray_dataset(
    frame: pd.DataFrame,
    store: ObjectStore,
    size: int | None,
    rows_per_block: int = 256,
    materialize: bool | None = None,
):
    """A split's labels frame -> Ray Dataset with RAY_COLUMNS.

    A split of up to :data:`DRIVER_DECODE_MAX_BYTES` decoded is decoded here (:func:`_driver_dataset`), a larger
    one inside Ray Data. There, ``materialize=None`` caches the decoded images in the object store when they fit in
    :data:`MATERIALIZE_MAX_BYTES`, so epochs after the first do not decode again and training workers do not
    compete with decode tasks for CPUs.
    """
    import ray.data

    if materialize is not False and len(frame) * (size or 224) ** 2 * 3 <= DRIVER_DECODE_MAX_BYTES:
        return _driver_dataset(frame, store, size, rows_per_block, seed=len(frame))
    if len(frame) and shards.is_ref(str(frame["image_key"].iloc[0])):
        ds = _shard_dataset(frame, store, size, seed=len(frame))
        return ds.materialize() if materialize is not False else ds
    cols = ["image_key", *TARGET_COLUMNS.values()]
    table = frame[cols].reset_index(drop=True)
    n_blocks = max(1, -(-len(table) // rows_per_block))
    parts = [table.iloc[i::n_blocks].reset_index(drop=True) for i in range(n_blocks)] if len(table) else [table]
    ds = ray.data.from_pandas(parts).map_batches(
        decode_batch, fn_kwargs={"store": store, "size": size}, batch_format="numpy", batch_size=64
    )
    if materialize is None:
        materialize = len(table) * (size or 224) ** 2 * 3 <= MATERIALIZE_MAX_BYTES
    return ds.materialize() if materialize else ds


def _driver_dataset(frame: pd.DataFrame, store: ObjectStore, size: int | None, rows_per_block: int, seed: int):
    """A small split decoded here (:func:`load_images`, which checks each shard against its sidecar) and put into
    the object store as Arrow blocks of RAY_COLUMNS, rows shuffled once (shards hold structures in id order)."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    keys = [str(k) for k in frame["image_key"]]
    order = np.random.default_rng(seed).permutation(len(keys))
    images = load_images(store, [keys[i] for i in order], size)
    labels = {col: frame[col].to_numpy(dtype=dtype)[order] for col, dtype in LABEL_DTYPES.items()}
    n_blocks = max(1, -(-len(keys) // rows_per_block))
    blocks = [
        pa.table(
            {"image": ArrowTensorArray.from_numpy(images[i::n_blocks])} | {c: v[i::n_blocks] for c, v in labels.items()}
        )
        for i in range(n_blocks)
    ]
    return ray.data.from_arrow(blocks)


def decode_shard_batch(batch: dict[str, np.ndarray], labels: pd.DataFrame, size: int | None) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function on shard rows: keep this split's images, raw pixels -> uint8 NHWC, labels
    (already standardised) from ``labels`` (indexed by image key)."""
    keys = [str(k) for k in batch["image_key"]]
    keep = [i for i, k in enumerate(keys) if k in labels.index]
    images = [shards.pixels(batch["image"][i], size) for i in keep]
    out = {"image": np.stack(images) if images else np.zeros((0, size or 0, size or 0, 3), np.uint8)}
    rows = labels.loc[[keys[i] for i in keep]]
    for col, dtype in LABEL_DTYPES.items():
        out[col] = rows[col].to_numpy(dtype=dtype)
    return out


def _shard_dataset(frame: pd.DataFrame, store: ObjectStore, size: int | None, seed: int):
    """A split read straight from its shards (``read_parquet``; each shard checked against its sidecar first, so a
    bad shard fails here with its name, not mid-training), rows of other splits dropped, then shuffled once so a
    streaming shuffle buffer sees every structure (shards hold structures in id order)."""
    import ray.data

    keys = sorted({shards.split_ref(str(k))[0] for k in frame["image_key"]})
    shards.verify(store, keys)
    labels = frame.set_index(frame["image_key"].astype(str))[list(TARGET_COLUMNS.values())]
    paths = [store.path(k) for k in keys]
    ds = ray.data.read_parquet(paths, filesystem=store.fs).select_columns(["image_key", "image"])
    ds = ds.map_batches(
        decode_shard_batch, fn_kwargs={"labels": labels, "size": size}, batch_format="numpy", batch_size=256
    )
    return ds.random_shuffle(seed=seed)

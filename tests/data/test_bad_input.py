"""The bad-input corpus in tests/data/bad: every item gets one clear error naming it, nothing crashes."""

from pathlib import Path

import pytest

from crystalvision.core.errors import ImageError, StorageError, StructureError
from crystalvision.data.dataset import decode_png
from crystalvision.data.snapshot import MaterialRecord
from crystalvision.data.storage import ObjectStore
from crystalvision.data.structures import read_cif_file
from tests.serve.test_predict import logged, logged_once  # noqa: F401  (fixtures: a tiny model logged as a pyfunc)
from tests.support.render import good_records, ray_session, render  # noqa: F401  (ray_session: fixture)
from tests.support.tiny import SIZE

BAD = Path(__file__).parents[1] / "data" / "bad"

CIF_CASES = {
    "empty.cif": "the CIF is empty",
    "truncated.cif": "not a readable CIF",
    "garbage.cif": "binary data, not a CIF",
    "partial_occupancy.cif": "partial occupancy",
    "unknown_element.cif": "unknown element 'Xq'",
    "zero_volume.cif": "zero-volume lattice",
    "nan_cell_angle.cif": "the cell has non-finite parameters",
    "atoms_20000.cif": "20000 atoms, more than the limit of 2000",
    # 100 Ni rows, 7,000 operations: pymatgen would spend minutes expanding it (tests/serve/test_predict.py times it)
    "symmetry_ops_7000.cif": "7000 symmetry operations on 100 atom rows",
}
IMAGE_CASES = {
    "garbage.png": "not a readable image",
    "truncated.png": "not a readable image",
    "grayscale.png": "grayscale image",
    "oversize.png": "larger than 4096 px",
    "decompression_bomb.png": "could be decompression bomb",
    "tiff_named.png": "a TIFF image, not PNG or JPEG",
    "palette_grey.png": "grayscale image (mode P)",
}


@pytest.mark.parametrize(("name", "message"), CIF_CASES.items())
def test_bad_cif_gets_one_clear_error(name: str, message: str) -> None:
    with pytest.raises(StructureError) as info:
        read_cif_file(BAD / name)
    text = str(info.value)
    assert name in text and message in text
    assert "\n" not in text


@pytest.mark.parametrize(("name", "message"), IMAGE_CASES.items())
def test_bad_image_gets_one_clear_error(name: str, message: str) -> None:
    with pytest.raises(ImageError) as info:
        decode_png((BAD / name).read_bytes(), name, size=64)
    assert name in str(info.value) and message in str(info.value)


def test_missing_cif_file() -> None:
    with pytest.raises(StructureError, match="file not found"):
        read_cif_file(BAD / "does-not-exist.cif")


@pytest.mark.parametrize("key", ["../escape.png", "a/../../b.png", "/etc/passwd"])
def test_object_keys_cannot_escape_the_store(tmp_path: Path, key: str) -> None:
    store = ObjectStore(str(tmp_path / "store"))
    with pytest.raises(StorageError, match="escapes the store root"):
        store.put_bytes(key, b"x")
    assert not (tmp_path / "escape.png").exists()


@pytest.mark.parametrize("bad_id", ["../mp-1", "mp/1", "", "mp 1", ".", "..."])
def test_material_ids_must_be_safe_keys(bad_id: str) -> None:
    """Ids become object keys: '.', '..' or a path would collapse or escape (tests/data/bad/dot_material_id.json)."""
    with pytest.raises(ValueError, match="not a safe identifier"):
        MaterialRecord(
            material_id=bad_id,
            formula="LiO",
            nsites=1,
            crystal_system="cubic",
            spacegroup_symbol="Fm-3m",
            spacegroup_number=225,
            band_gap=0,
            energy_above_hull=0,
            structure={},
        )


# ---- a batch never crashes: bad items are reported, good ones go through ------------------------------------------


def _broken_copies(good: MaterialRecord) -> dict[str, tuple[MaterialRecord, str]]:
    """The corpus's structure defects applied to a real record: id -> (record, expected error text)."""

    def broken(suffix: str, change) -> MaterialRecord:
        rec = good.model_copy(deep=True)
        rec.material_id = f"{good.material_id}-{suffix}"
        change(rec.structure)
        return rec

    def partial(s: dict) -> None:
        s["sites"][0]["species"][0]["occu"] = 0.5

    def unknown(s: dict) -> None:
        s["sites"][0]["species"][0]["element"] = "Xq"

    def flat(s: dict) -> None:
        s["lattice"]["matrix"][2] = [0.0, 0.0, 0.0]

    def garbage(s: dict) -> None:
        s.clear()
        s["sites"] = "garbage"

    cases = {"partial": (partial, "partial occupancy"), "unknown": (unknown, "'Xq'")}
    cases |= {"flat": (flat, "zero volume"), "garbage": (garbage, "stored structure is unreadable")}
    return {f"{good.material_id}-{k}": (broken(k, change), text) for k, (change, text) in cases.items()}


@pytest.mark.usefixtures("ray_session")
def test_render_batch_quarantines_corpus_defects_and_renders_the_rest(tmp_path: Path, bundled_snapshot) -> None:
    from crystalvision.core.config import RenderConfig

    good = good_records(bundled_snapshot, 2)
    broken = _broken_copies(good[0])
    cfg = RenderConfig(image_size=32, views_per_structure=2, num_workers=1, cpus_per_worker=0.5)
    store = ObjectStore(str(tmp_path / "store"))
    records = [good[0], *(rec for rec, _ in broken.values()), good[1]]
    result = render(records, bundled_snapshot, cfg, store)
    errors = {q["material_id"]: q["error"] for q in result.quarantined}
    assert sorted(errors) == sorted(broken)
    for mid, (_, text) in broken.items():
        assert errors[mid].startswith(mid) and text in errors[mid] and "\n" not in errors[mid]
    assert result.n_images == result.n_new == 4
    from crystalvision.data.dataset import load_labels

    assert sorted(set(load_labels(store, result.labels_key)["material_id"])) == sorted(r.material_id for r in good)


def test_predict_files_on_the_corpus_gives_one_error_row_per_bad_file(logged, tmp_path: Path) -> None:  # noqa: F811
    import numpy as np
    import pandas as pd

    from crystalvision.serve import face
    from tests.serve.test_predict import GOOD_CIF, _png

    uri, *_ = logged
    good_png, good_cif = tmp_path / "good.png", tmp_path / "mp-25284.cif"
    good_png.write_bytes(_png(SIZE))
    good_cif.write_text(GOOD_CIF)
    bad = sorted(p for p in BAD.iterdir() if p.suffix in (".cif", ".png"))  # dot_material_id.json: test_mp
    files = [good_png, *bad, good_cif]
    out = face.predict_files(files, model_uri=uri, views=2)
    assert list(out["file"]) == [str(f) for f in files]
    for row in (out.iloc[0], out.iloc[-1]):
        assert pd.isna(row["error"]) and np.isfinite(row["band_gap"]) and row["crystal_system"], row["error"]
    # the prediction path refuses an oversize CIF before parsing it (predict_input.py), with its own message
    expected = (
        CIF_CASES
        | IMAGE_CASES
        | {
            "garbage.cif": "not a readable CIF",
            "atoms_20000.cif": "more than a structure of at most 2000 atoms needs",
            "tiff_named.png": "the image is TIFF, not PNG or JPEG",
        }
    )
    for path, error in zip(bad, out["error"][1:-1], strict=True):
        assert isinstance(error, str) and path.name in error and expected[path.name] in error, (path.name, error)
        assert pd.isna(out.loc[out["file"] == str(path), "band_gap"]).all()

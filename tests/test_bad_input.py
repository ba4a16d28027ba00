"""The bad-input corpus in tests/data/bad: every item gets one clear error naming it, nothing crashes."""

from pathlib import Path

import pytest

from crystalvision.dataset import decode_png
from crystalvision.errors import ImageError, StorageError, StructureError
from crystalvision.snapshot import MaterialRecord
from crystalvision.storage import ObjectStore
from crystalvision.structures import read_cif_file

BAD = Path(__file__).parent / "data" / "bad"

CIF_CASES = {
    "empty.cif": "the CIF is empty",
    "truncated.cif": "not a readable CIF",
    "garbage.cif": "binary data, not a CIF",
    "partial_occupancy.cif": "partial occupancy",
    "unknown_element.cif": "unknown element 'Xq'",
    "zero_volume.cif": "zero-volume lattice",
}
IMAGE_CASES = {
    "garbage.png": "not a readable image",
    "truncated.png": "not a readable image",
    "grayscale.png": "grayscale image",
    "oversize.png": "larger than 4096 px",
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


@pytest.mark.parametrize("bad_id", ["../mp-1", "mp/1", "", "mp 1"])
def test_material_ids_must_be_safe_keys(bad_id: str) -> None:
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

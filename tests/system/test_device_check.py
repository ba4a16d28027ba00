"""The GPU check where no GPU runs it: bench/device/prepare builds the carry for a bare GPU machine and the carry's
own `run --smoke` runs it, here on the CPU (it trains with Ray Train: the Ray lane of tests/run_files.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stand_in_wheels(folder: Path) -> None:
    """A metadata-only wheel for each package bench/device/prepare carries, at the version this venv has (tests have
    no package index); Ray's holds a ``ray/jars/`` file, which the repack must drop."""
    import base64
    import hashlib
    import importlib.metadata
    import re
    import zipfile

    names = re.search(r'PKGS="([^"]*)"', (ROOT / "bench/device/prepare").read_text()).group(1).split()
    folder.mkdir(parents=True)
    for name in names:
        version, stem = importlib.metadata.version(name), name.replace("-", "_")
        info = f"{stem}-{version}.dist-info"
        files = {
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        } | ({"ray/jars/ray_dist.jar": "java"} if name == "ray" else {})
        digest = {k: base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode() for k, v in
                  files.items()}  # fmt: skip
        record = "".join(f"{k},sha256={digest[k]},{len(v)}\n" for k, v in files.items()) + f"{info}/RECORD,,\n"
        with zipfile.ZipFile(folder / f"{stem}-{version}-py3-none-any.whl", "w") as whl:
            for key, text in [*files.items(), (f"{info}/RECORD", record)]:
                whl.writestr(key, text)


@pytest.mark.slow
def test_device_check_prepares_its_carry_and_runs_it_on_cpu(tmp_path: Path) -> None:
    """bench/device/prepare, then the carry's own `run --smoke` as a bare GPU machine runs it, here on the CPU with
    two structures at 32 px. Offline: the wheels are metadata-only stand-ins (the venv's own packages do the work),
    so what is checked is everything else: the repack, the package copy, the data step, the install and the bench."""
    import os
    import zipfile

    import numpy as np

    cache, carry, out = tmp_path / "wheels", tmp_path / "carry", tmp_path / "out"
    _stand_in_wheels(cache)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"PY": sys.executable, "CRYSTALVISION_HOME": str(tmp_path / "home")}
    prepare = {"CARRY": str(carry), "WHEEL_CACHE": str(cache), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(cache),
               "DATA_ARGS": "--views 2 --size 32 --limit 2"}  # fmt: skip
    done = subprocess.run(
        ["bash", str(ROOT / "bench/device/prepare")], env=env | prepare, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in carry.iterdir()} == {"whl", "pkg", "data", "run", "device_bench.py"}
    (ray_wheel,) = carry.glob("whl/ray-*.whl")
    assert not [n for n in zipfile.ZipFile(ray_wheel).namelist() if n.startswith("ray/jars/")], "repack dropped jars"
    assert (carry / "pkg/crystalvision/learn/train.py").is_file()

    sys.path.insert(0, str(carry))
    try:
        import device_bench
    finally:
        sys.path.remove(str(carry))
    data = device_bench.load_data(carry / "data/images.npz", None)
    assert data["image"].shape == (4, 32, 32, 3) and data["image"].dtype == np.uint8 and data["image"].any()
    spec = device_bench.spec_for(data, 32)
    assert data["crystal_system_id"].min() >= 0 and data["crystal_system_id"].max() < len(
        spec.class_names["crystal_system"]
    )
    assert data["spacegroup_id"].min() >= 0 and data["spacegroup_id"].max() < len(spec.class_names["spacegroup"])
    assert np.isfinite(data["band_gap"]).all() and np.isfinite(data["energy_above_hull"]).all()

    run = {"SITE": str(tmp_path / "site"), "OUT": str(out)}
    done = subprocess.run(
        ["bash", str(carry / "run"), "--smoke"], env=env | run, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == json.loads((out / "device-results.json").read_text())
    assert result["smoke"] is True and result["size"] == 32 and result["n_images"] == 4
    assert result["fail_fast"]["ok"] is True
    (ray_run,) = result["ray_train"]
    assert "error" not in ray_run and ray_run["epochs"] == 2 and ray_run["model_saved"] is True
    assert result["plain"] and all(row["images_per_s"] > 0 for row in result["plain"])

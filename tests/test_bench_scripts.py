"""Smoke tests of the bench scripts no other test runs: the Ray wheel repack and the impostor study's interval."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_repack_ray_drops_java_and_dashboard_build_and_their_record_lines(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("repack_ray", BENCH / "device" / "repack_ray.py")
    repack_ray = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repack_ray)
    names = ["ray/__init__.py", "ray/jars/ray.jar", "ray/dashboard/client/build/index.js", "ray/dashboard/head.py"]
    record = "".join(f"{n},sha256=x,1\n" for n in names)
    src, dst = tmp_path / "ray.whl", tmp_path / "slim.whl"
    with zipfile.ZipFile(src, "w") as z:
        for n in names:
            z.writestr(n, b"x")
        z.writestr("ray-2.60.dist-info/RECORD", record)
    repack_ray.repack(str(src), str(dst))
    with zipfile.ZipFile(dst) as z:
        kept = set(z.namelist())
        left = z.read("ray-2.60.dist-info/RECORD").decode()
    assert kept == {"ray/__init__.py", "ray/dashboard/head.py", "ray-2.60.dist-info/RECORD"}
    assert "jars" not in left and "client/build" not in left and "ray/dashboard/head.py" in left


def test_impostor_paired_interval_is_zero_for_equal_sets_and_covers_a_real_gap() -> None:
    from bench.impostor_equivalence import paired_ci

    a = np.random.default_rng(0).random(200) < 0.6
    assert paired_ci(a, a) == (0.0, 0.0)
    lo, hi = paired_ci(np.ones(50, bool), np.r_[np.zeros(25, bool), np.ones(25, bool)])
    assert 0.3 < lo <= 0.5 <= hi < 0.7

"""The results table of docs/study.md, regenerated from the paper pipelines' own outputs.

Reads the JSON summaries that ``crystalvision pipeline run pipelines/<name>.yaml ... > <name>.json`` printed for
``paper`` (trajectory frames, split by image), ``paper-uniform`` (uniform views, by image) and ``paper-grouped``
(uniform views, grouped k-fold: metrics are ``<name>_mean`` / ``<name>_std`` over folds), and prints a Markdown
table: the study's reported numbers (a citation), then per protocol the image model (per image and per structure),
the CGCNN graph baseline, the 1-NN descriptor and majority baselines, and the leakage (median SSIM of each test
image to its nearest training image).

Usage: ``python docs/study/results_table.py docs/study/records [--readme docs/study.md]`` (the folder holding
paper.json, paper-uniform.json, paper-grouped.json and the commands that made them, ``<name>.cmd``); ``--readme``
rewrites the table between the page's ``results-table`` markers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PROTOCOLS = [
    ("paper", "trajectory frames (6°), split by image (the study's protocol)"),
    ("paper-uniform", "uniform views, split by image"),
    ("paper-grouped", "uniform views, grouped 5-fold (unseen structures)"),
]
COLUMNS = ("r2_band_gap", "r2_energy_above_hull", "acc_crystal_system", "acc_spacegroup")
HEADER = "| protocol | model | epochs | R² gap | R² e_hull | acc system | acc space group | nearest-SSIM median |"
STUDY = (
    "| study (KAIST, reported): rotation-video frames, split by image, DFT labels, 224 px | ImageNet B0 | 124 "
    "| 0.977 | 0.965 | 0.995 | 0.993 | |"
)


def cgcnn_size(m: dict[str, float]) -> str:
    """``3 x 64`` from a record's ``cgcnn_layers`` / ``cgcnn_atom_features``; records made before those were logged
    trained the graph baseline's size of that time, 2 convolutions x 32 features."""
    layers = m.get("cgcnn_layers_mean", m.get("cgcnn_layers"))
    width = m.get("cgcnn_atom_features_mean", m.get("cgcnn_atom_features"))
    return f"{layers:.0f} x {width:.0f}" if layers and width else "2 x 32"


def cell(m: dict[str, float], name: str) -> str:
    """``0.41`` or, for k-fold summaries, ``0.41 ± 0.05``; blank when absent."""
    if f"{name}_mean" in m:
        return f"{m[f'{name}_mean']:.2f} ± {m[f'{name}_std']:.2f}"
    return f"{m[name]:.2f}" if name in m else ""


def epochs(m: dict[str, float], cap: int | None) -> str:
    """Epochs trained (best epoch), mean over folds for k-fold."""
    run = m.get("epochs_trained", m.get("epochs_trained_mean"))
    best = m.get("best_epoch", m.get("best_epoch_mean"))
    if run is None:
        return ""
    text = f"{run:.0f}" if "epochs_trained" in m else f"{run:.1f} (mean)"
    return text + (f" of {cap}" if cap else "") + (f", best {best + 1:.0f}" if best is not None else "")


def load(folder: Path, name: str) -> tuple[dict, int | None] | None:
    """The pipeline's summary (``<name>.json``, stdout of ``pipeline run``) and its epoch cap (``<name>.cmd``)."""
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    text = path.read_text()
    summary = json.loads(text[text.index("{") :])
    cmd = folder / f"{name}.cmd"
    found = re.search(r"train\.epochs=(\d+)", cmd.read_text()) if cmd.is_file() else None
    return summary, int(found.group(1)) if found else None


def rows(label: str, summary: dict, cap: int | None) -> list[str]:
    m = summary["metrics"]
    leak = cell(m, "leakage_ssim_median")
    out = []
    train_s = sum(v for k, v in summary.get("stage_seconds", {}).items() if k.startswith("train"))
    wall = f"; train {train_s / 60:.0f} min" if train_s else ""
    for model, prefix, ep in (
        ("EfficientNet-B0, per image", "test", epochs(m, cap) + wall),
        ("EfficientNet-B0, per structure (views averaged)", "test_struct", ""),
        (f"CGCNN graph baseline ({cgcnn_size(m)}), per structure", "cgcnn_test", ""),
        ("1-NN on structure descriptor", "baseline_1nn", ""),
        ("majority class / train mean", "baseline_dummy", ""),
    ):
        cells = [cell(m, f"{prefix}_{c}") for c in COLUMNS]
        first = prefix == "test"
        shown = f"**{label}**" if first else ""
        out.append(f"| {shown} | {model} | {ep} | " + " | ".join(cells) + f" | {leak if first else ''} |")
    return out


def table(folder: Path) -> str:
    lines = [HEADER, "|" + "---|" * 8, STUDY]
    for name, label in PROTOCOLS:
        loaded = load(folder, name)
        if loaded is not None:
            lines += rows(label, *loaded)
    return "\n".join(lines)


START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"


def write_readme(readme: Path, text: str) -> None:
    """Replace the table between the page's ``results-table`` markers."""
    doc = readme.read_text()
    head, rest = doc.split(START, 1)
    readme.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    args = sys.argv[1:]
    readme = Path(args.pop(args.index("--readme") + 1)) if "--readme" in args else None
    if readme is not None:
        args.remove("--readme")
    result = table(Path(args[0]) if args else Path(__file__).parent / "records")
    if readme is not None:
        write_readme(readme, result)
    print(result)

"""A self-contained HTML report of an evaluation: tables, embedded PNGs, split protocol, label sources."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crystalvision.core import EvaluateConfig, target
from crystalvision.data import MP_LABEL_SOURCE
from crystalvision.learn import ModelSpec

# Rows of the comparison table: (label, metric prefix); columns: (header, metric name without the prefix).
ROWS = [
    ("model, per image", "test"),
    ("model, per structure (mean of views)", "test_struct"),
    ("model, validation per image", "val"),
    ("dummy (train+val mean / majority)", "baseline_dummy"),
    ("1-NN on reduced cell + composition", "baseline_1nn"),
    ("trees on composition + primitive cell (tabular)", "baseline_tabular"),
    ("symmetry analysis (spglib), ceiling", "baseline_symmetry"),
    ("CGCNN graph baseline, per structure", "cgcnn_test"),
]
GRAPH_NOTE = (
    "Graph baseline: CGCNN (graphnet.py, CGConv layers on pymatgen neighbour lists; by default the published size, "
    "3 convolutions x 64 atom features, 128 hidden) trained on the same split's training structures with early "
    "stopping on its validation structures and scored per structure (compare with the model's per-structure row; "
    "its budget: cgcnn_epochs_trained, cgcnn_train_seconds). The bundled band gaps are themselves predictions of a "
    "pretrained CGCNN (the snapshot's labels.md): on band gap a CGCNN re-learns its own family's output, not DFT."
)
COLUMNS = [
    ("R² gap", "r2_band_gap"),
    ("MAE gap (eV)", "mae_band_gap"),
    ("R² e_hull", "r2_energy_above_hull"),
    ("MAE e_hull (eV/atom)", "mae_energy_above_hull"),
    ("stability F1", "stability_f1"),
    ("acc system", "acc_crystal_system"),
    ("balanced acc system", "balanced_acc_crystal_system"),
    ("macro F1 system", "macro_f1_crystal_system"),
    ("acc space group", "acc_spacegroup"),
    ("balanced acc space group", "balanced_acc_spacegroup"),
    ("macro F1 space group", "macro_f1_spacegroup"),
]
STUDY = {"R² gap": 0.9773, "R² e_hull": 0.9650, "acc system": 0.9945, "acc space group": 0.9927}
CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}.note{background:#fff3cd;border:1px solid #e0c060;
padding:.8em;margin:1em 0}img{max-width:100%;border:1px solid #ddd;margin:4px}pre{background:#f7f7f7;padding:.6em;
font-size:12px;overflow-x:auto}.figs{display:flex;flex-wrap:wrap}.figs figure{margin:4px;max-width:48%}"""


def is_surrogate(label_source: Mapping[str, str]) -> bool:
    """True unless every regression label source is the Materials Project database itself."""
    prefixes = [v.split("{db}")[0] for v in MP_LABEL_SOURCE.values()]
    values = [v for v in label_source.values() if v]
    return not values or any(not any(v.startswith(p) for p in prefixes) for v in values)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def comparison_table(metrics: Mapping[str, float]) -> str:
    """Model levels and baselines side by side (blank where a metric does not apply or was skipped)."""
    rows = [["study (KAIST, image split, DFT labels)"] + [STUDY.get(h, "") for h, _ in COLUMNS]]
    for label, prefix in ROWS:
        cells = [metrics.get(f"{prefix}_{name}", "") for _, name in COLUMNS]
        if any(c != "" for c in cells):
            rows.append([label, *cells])
    return _table(["", *[h for h, _ in COLUMNS]], rows)


def _figure(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    name = html.escape(Path(path).name)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def write_report(
    path: str | Path,
    *,
    metrics: Mapping[str, float],
    splits: Mapping[str, Any],
    label_source: Mapping[str, str],
    spec: ModelSpec,
    cfg: EvaluateConfig,
    reports: Mapping[str, str],
    absent: Mapping[str, list[str]],
    figures: Sequence[Path],
    saliency: Any = None,
    notes: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> Path:
    """Write ``report.html`` (PNGs embedded as data URIs, so the file stands alone).

    ``sections`` are ready HTML fragments (e.g. :func:`crystalvision.evaluate.leakage.leakage_html`) placed before the
    figures.
    """
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>crystalvision evaluation</title>"
        f"<style>{CSS}</style></head><body><h1>crystalvision evaluation</h1>"
    ]
    if is_surrogate(label_source):
        parts.append(
            "<div class='note'><b>Surrogate labels.</b> The regression labels below are not the Materials "
            "Project's DFT values (see label sources); these metrics are not a reproduction of the study's "
            "numbers.</div>"
        )
    parts.append(
        f"<p>test_score (mean of the two test R² and the two test accuracies): "
        f"<b>{_fmt(metrics.get('test_score', 'n/a'))}</b></p>"
    )
    parts.append("<h2>Model and baselines (test split)</h2>" + comparison_table(metrics))
    parts.append(
        f"<p>Stability = e_above_hull &le; {cfg.stability_threshold} eV/atom. Baselines are per structure. "
        f"The symmetry baseline uses spglib at symprec {cfg.symmetry_symprec}; the snapshot's labels come "
        "from the same analysis, so it is the ceiling of the classification heads.</p>"
    )
    parts.append("<h2>Split protocol</h2>" + _table(["field", "value"], list(splits.items())))
    parts.append("<h2>Label sources</h2>" + _table(["target", "source"], list(label_source.items())))
    parts.append(
        "<h2>Model</h2>"
        + _table(
            ["field", "value"],
            [
                ("backbone", spec.backbone),
                ("image_size", spec.image_size),
                ("snapshot_id", spec.snapshot_id or ""),
                ("snapshot_sha256", spec.snapshot_sha256 or ""),
                *((f"{target(t).title} classes", len(c)) for t, c in spec.class_lists().items()),
            ],
        )
    )
    if any(k.startswith("cgcnn_test_") for k in metrics):
        notes = [GRAPH_NOTE, *notes]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.extend(sections)
    parts.append(
        "<h2>Figures</h2><div class='figs'>" + "".join(_figure(p) for p in figures if Path(p).is_file()) + "</div>"
    )
    if saliency is not None:
        parts.append(
            f"<h2>Saliency</h2><p>SmoothGrad (captum NoiseTunnel over Saliency), noise std "
            f"{cfg.saliency_noise} of the pixel range, {cfg.saliency_samples} samples, one example per "
            "crystal system, grey maps; SSIM between class maps:</p>"
        )
        parts.append(
            _table(
                ["", *saliency.classes],
                [[c, *map(float, row)] for c, row in zip(saliency.classes, saliency.ssim, strict=True)],
            )
        )
    parts.append("<h2>Classification reports (test, per image)</h2>")
    for t, text in reports.items():
        miss = ", ".join(absent.get(t, [])) or "none"
        parts.append(
            f"<h3>{html.escape(t)}</h3><p>classes absent from the test split: {html.escape(miss)}</p>"
            f"<pre>{html.escape(text)}</pre>"
        )
    parts.append("<h2>All metrics</h2>" + _table(["metric", "value"], sorted(metrics.items())))
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def folds_table(
    per_fold: Sequence[Mapping[str, float]],
    aggregated: Mapping[str, float],
    labels: Sequence[str] | None = None,
    over: str = "folds",
) -> str:
    """Rows = model levels and baselines, columns = the comparison metrics, cells = mean ± std ``over`` the child runs
    (folds, fold x seed runs or seeds); then one row per child run, named by ``labels`` (default ``fold i``)."""
    from crystalvision.data import mean_std_text

    rows = [["study (KAIST, image split, DFT labels)"] + [STUDY.get(h, "") for h, _ in COLUMNS]]
    for label, prefix in ROWS:
        if prefix == "val":
            continue
        cells = [mean_std_text(aggregated, f"{prefix}_{name}") for _, name in COLUMNS]
        if any(c != "n/a" for c in cells):
            rows.append([label, *[c if c != "n/a" else "" for c in cells]])
    names = list(labels) if labels is not None else [f"fold {i}" for i in range(len(per_fold))]
    per = [[n, *[m.get(f"test_{name}", "") for _, name in COLUMNS]] for n, m in zip(names, per_fold, strict=True)]
    return (
        _table([f"mean ± std over {over}", *[h for h, _ in COLUMNS]], rows)
        + f"<h3>Per {'seed' if over == 'seeds' else 'child run'} (model, per image)</h3>"
        + _table(["", *[h for h, _ in COLUMNS]], per)
    )


def run_labels(folds: Sequence[Mapping[str, Any]], on_holdout: bool = False) -> list[str]:
    """A name per child run (``folds``: each run's description, with ``fold`` and ``seed``): ``fold i, seed s``
    (``fold i`` with one seed); on the hold-out, ``seed s``."""
    seeds = {f.get("seed") for f in folds}
    if on_holdout:
        return [f"hold-out, seed {f.get('seed', '')}" for f in folds]
    return [f"fold {f.get('fold', i)}" + (f", seed {f.get('seed')}" if len(seeds) > 1 else "")
            for i, f in enumerate(folds)]  # fmt: skip


def _heading(folds: Sequence[Mapping[str, Any]], aggregated: Mapping[str, float], holdout: Mapping[str, Any]) -> str:
    """The report's title and what its test set is: the k folds, or the one hold-out (``split.holdout.use: test``)."""
    seeds = sorted({f.get("seed") for f in folds}, key=str)
    score = html.escape(_mean_std(aggregated, "test_score"))
    if holdout.get("use") == "test":
        name = html.escape(str(holdout.get("file", "")))
        tested, n_ids = holdout.get("n_tested"), holdout.get("n_ids")
        count = f"{n_ids} ids" if tested is None else f"{tested} of its {n_ids} ids tested"
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>crystalvision hold-out test</title>"
            f"<style>{CSS}</style></head><body><h1>crystalvision hold-out test: {name} ({count}, "
            f"{len(seeds)} training seed{'s' if len(seeds) != 1 else ''})</h1>"
            f"<p>One fixed test set: the hold-out {name} ({count}, sha256 "
            f"{html.escape(str(holdout.get('sha256', ''))[:12])}), training + validation carved from the other "
            "structures (no structure of a hold-out formula among them). One row per training seed; test_score, "
            f"mean ± std over seeds: <b>{score}</b> (std: the sample std over seeds).</p>"
        )
    n_folds = len({f.get("fold") for f in folds}) or len(folds)
    runs = f", {len(seeds)} seeds" if len(seeds) > 1 else ""
    over = "the fold x seed runs" if len(seeds) > 1 else "folds"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>crystalvision k-fold evaluation</title>"
        f"<style>{CSS}</style></head><body><h1>crystalvision k-fold evaluation ({n_folds} folds{runs})</h1>"
        f"<p>test_score, mean ± std over {over}: <b>{score}</b>. Every structure (grouped folds) is in exactly one "
        f"test fold; std is the sample std over {over}; metrics undefined on a fold (e.g. R² of one test structure) "
        "are left out of that metric's mean.</p>"
    )


def write_folds_report(
    path: str | Path,
    *,
    per_fold: Sequence[Mapping[str, float]],
    aggregated: Mapping[str, float],
    folds: Sequence[Mapping[str, Any]],
    label_source: Mapping[str, str],
    pooled: Mapping[str, float] | None = None,
    holdout: Mapping[str, Any] | None = None,
) -> Path:
    """``folds_report.html`` of a k-fold parent run: pooled out-of-fold metrics and paired comparisons (``pooled``,
    from ``oof.summarise``), mean ± std table, per-run rows (fold and seed), fold sizes, unseen classes and ceilings.
    ``holdout`` (the record's, :func:`~crystalvision.data.describe_holdout`): with ``use: test`` the report names the
    hold-out file, its size and sha256 as the one test set instead of k folds.

    Each fold's child run holds its full evaluation report (leakage section, figures, classification reports).
    """
    holdout = holdout or {}
    on_holdout = holdout.get("use") == "test"
    labels = run_labels(folds, on_holdout) if len(folds) == len(per_fold) else None
    seeds = {f.get("seed") for f in folds}
    over = "seeds" if on_holdout else "the fold x seed runs" if len(seeds) > 1 else "folds"
    parts = [_heading(folds, aggregated, holdout)]
    if is_surrogate(label_source):
        parts.append("<div class='note'><b>Surrogate labels.</b> See label sources; not the study's DFT values.</div>")
    if pooled:
        parts.append(pooled_section(pooled, on_holdout))
    test = "the hold-out" if on_holdout else "test folds"
    parts.append(f"<h2>Model and baselines ({test})</h2>" + folds_table(per_fold, aggregated, labels, over))
    if any(k.startswith("cgcnn_test_") for k in aggregated):
        parts.append(f"<p class='note'>{html.escape(GRAPH_NOTE)}</p>")
    names = labels or [f"fold {i}" for i in range(len(per_fold))]
    leak = [[n, *[m.get(k, "") for k in LEAKAGE_KEYS]] for n, m in zip(names, per_fold, strict=True)]
    if any(any(c != "" for c in r[1:]) for r in leak):
        parts.append(
            "<h2>Leakage: nearest training image (per child run)</h2><p>SSIM of each test image to its nearest "
            "training image (each child run's report has the figure).</p>" + _table(["", *LEAKAGE_KEYS], leak)
        )
    keys = sorted({k for f in folds for k in f})
    title = "The hold-out test set and its training + validation (per seed)" if on_holdout else "Folds (per run)"
    parts.append(f"<h2>{title}</h2>" + _table(keys, [[f.get(k, "") for k in keys] for f in folds]))
    parts.append("<h2>Label sources</h2>" + _table(["target", "source"], list(label_source.items())))
    parts.append("<h2>All aggregated metrics</h2>" + _table(["metric", "value"], sorted(aggregated.items())))
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


POOLED_COLUMNS = [(h, n) for h, n in COLUMNS if n != "stability_f1"]
DIFF_COLUMNS = ["r2_band_gap", "r2_energy_above_hull", *(f"{m}_{h}" for h in ("crystal_system", "spacegroup")
                                                          for m in ("acc", "balanced_acc", "macro_f1"))]  # fmt: skip


def _subsets(pooled: Mapping[str, float]) -> list[str]:
    """Subset names of pooled metrics ("" for all structures)."""
    return sorted(k.removeprefix("pooled").removesuffix("n_structures").strip("_") for k in pooled
                  if k.startswith("pooled") and k.endswith("_n_structures"))  # fmt: skip


def _predictors(pooled: Mapping[str, float], pre: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(pre)}([^_]+)_(r2|mae|acc|balanced_acc|macro_f1)_")
    found = {m.group(1) for k in pooled if (m := pattern.match(k))}
    return sorted(found - {"diff", "ceiling"}, key=lambda p: (p != "model", p))


def pooled_section(pooled: Mapping[str, float], on_holdout: bool = False) -> str:
    """Pooled out-of-fold metrics (scored once over every test structure) per predictor and subset, and the paired
    bootstrap intervals of the model minus each baseline; ``on_holdout``: worded for the one hold-out test set."""
    head, fit = (
        ("Pooled on the hold-out (every hold-out structure predicted once per seed, scored once)",
         "the training + validation structures")
        if on_holdout else
        ("Pooled out of fold (every structure predicted once, scored once)",
         "each fold's training + validation structures")
    )  # fmt: skip
    parts = [
        f"<h2>{head}</h2><p>Per structure (model: views averaged). Baselines are fit on {fit}. With several seeds, "
        "the mean over seeds (± their sample std); differences: model minus baseline with the 95 % interval of a "
        "paired bootstrap over structures (seed-averaged metric in each resample).</p>"
    ]
    for sub in _subsets(pooled):
        pre = f"pooled_{sub}_" if sub else "pooled_"
        n = pooled.get(f"{pre}n_structures", 0)
        rows = []
        for p in _predictors(pooled, pre):
            cells = []
            for _, m in POOLED_COLUMNS:
                v, sd = pooled.get(f"{pre}{p}_{m}"), pooled.get(f"{pre}{p}_{m}_seed_std")
                cells.append("" if v is None else f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else ""))
            rows.append([p, *cells])
        ceil = [f"{h}: {pooled[f'{pre}ceiling_acc_{h}']:.3f}" for h in ("crystal_system", "spacegroup")
                if f"{pre}ceiling_acc_{h}" in pooled]  # fmt: skip
        parts.append(f"<h3>{html.escape(sub or 'all structures')} ({n:.0f} structures)</h3>")
        parts.append(_table(["predictor", *[h for h, _ in POOLED_COLUMNS]], rows))
        if ceil:
            parts.append(f"<p>accuracy ceiling (test class seen in training): {html.escape(', '.join(ceil))}</p>")
        diffs = []
        for b in sorted({k.split("_vs_")[1].split("_")[0] for k in pooled if k.startswith(f"{pre}diff_model_vs_")}):
            key = f"{pre}diff_model_vs_{b}_"
            cells = [
                f"{pooled[key + m]:+.3f} [{pooled[key + m + '_lo']:+.3f}, {pooled[key + m + '_hi']:+.3f}]"
                if key + m + "_hi" in pooled else "" for m in DIFF_COLUMNS
            ]  # fmt: skip
            diffs.append([f"model − {b}", *cells])
        if diffs:
            parts.append(_table(["difference [95 % CI]", *DIFF_COLUMNS], diffs))
    return "".join(parts)


LEAKAGE_KEYS = ("leakage_ssim_median", "leakage_frac_nearest_same_structure", "leakage_acc_crystal_system")


def _mean_std(aggregated: Mapping[str, float], name: str) -> str:
    from crystalvision.data import mean_std_text

    return mean_std_text(aggregated, name)

"""README's headline numbers, regenerated from the study's grouped k-fold records.

Reads ``space-formula/merged.json`` (the whole Li-Mn-Ni-O space on folds grouped by reduced formula, one part per
training seed merged by ``seed_record.py``: seed-averaged pooled scores per structure, the image model's interval and
std over seeds, paired differences; its dates and hardware from its parts, the seeds not run yet from the
``seed_record.py merge --seeds`` line of ``space-formula.cmd`` and its image size and views from that file's
``crystalvision pipeline run`` line), ``space-grouped.json`` (the same space on folds grouped by material id, one seed:
pooled out-of-fold scores with intervals and paired differences), ``space-holdout/merged.json`` (the 127 structures of
the hold-out no selection saw, one part per training seed, merged like the formula record; its ``.cmd`` is
``space-holdout.cmd``) and ``paper-grouped.json`` (the 62 quaternaries alone: mean ± sample std over folds), with the
``.cmd`` beside the last two (the run's date is the first dated comment above its command; the image size and grouping
come from the pipeline and ``--set`` options of its ``crystalvision pipeline run`` line), and writes two blocks of
README.md: the "honest number" bullet (between the ``readme-headline`` markers: the quaternaries, the formula-grouped
space, and whether material-id grouping gave the image model about the same, i.e. a value inside the formula record's
interval, and the hold-out) and, between the ``readme-results`` markers, the headline table (the formula-grouped record
first, then the hold-out, material-id and quaternary ones, each block naming its grouping and seeds), the formula
record's paired differences on crystal system and the verdict on the image model (against the trees on every head, the
majority class on the class heads, the 1-NN lookup on crystal system, and its band-gap R² against 0.5). Every claim in
them (which model beats which, with an interval clear of zero; which baseline is the strongest and where it leads) is
computed from the records. The keys and the marker rewriting are ``space_table.py``'s.

Usage: ``python docs/study/readme_headline.py [docs/study/records] [--readme README.md]`` (without ``--readme`` it
prints both blocks).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Callable
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING

import space_table as st  # a sibling script: run as a script, this folder is on sys.path

if TYPE_CHECKING:
    from crystalvision.core.config import PipelineConfig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPACE, QUATERNARIES = "space-grouped.json", "paper-grouped.json"
FORMULA = "space-formula/merged.json"  # the strictest grouping, one part per training seed
HOLDOUT = "space-holdout/merged.json"  # the structures no selection saw, one part per training seed
HEADS = [("crystal_system", "acc", "acc crystal system"), ("spacegroup", "acc", "acc space group"),
         ("band_gap", "r2", "R² band gap")]  # fmt: skip
GROUPS = {"formula": "reduced formula", "material": "material id", "structure_cluster": "structure cluster"}
WORDS = {"crystal_system": "crystal system", "spacegroup": "space group", "band_gap": "band gap"}
# where a k-fold record keeps each method's per-fold mean and std (the image model: per structure)
FOLD_KEYS = {"model": "test_struct", "tabular": "baseline_tabular", "cgcnn": "cgcnn_test", "1nn": "baseline_1nn",
             "dummy": "baseline_dummy"}  # fmt: skip


ORDER = list(st.PREDICTORS.values())  # model, tabular, cgcnn, 1nn, dummy


def shown(path: Path) -> str:
    """A record's path as README names it: from the repository root."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def pipeline_config(cmd: Path) -> PipelineConfig:
    """The config of the first ``crystalvision pipeline run`` line of ``cmd``: the pipeline file and its ``--set``s."""
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides

    lines = cmd.read_text().replace("\\\n", " ").splitlines()
    words = shlex.split(next(x for x in lines if "crystalvision pipeline run " in x and not x.startswith("#")))
    run = words[words.index("crystalvision") :]  # after a ``nice -n 10``
    sets = [run[i + 1] for i, w in enumerate(run[:-1]) if w == "--set"]
    return load_pipeline(ROOT / run[3], parse_overrides(sets))


def run_info(record_path: Path, record: dict) -> dict[str, str]:
    """The run's date, image size, views and grouping, from the record and its ``.cmd``."""
    cmd = record_path.with_suffix(".cmd")
    lines = cmd.read_text().replace("\\\n", " ").splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    dates = [m.group(1) for line in lines[:first] if (m := re.match(r"#\s*(\d{4}-\d{2}-\d{2})", line))]
    if not dates:
        raise SystemExit(f"{cmd}: no dated comment above its command")
    cfg = pipeline_config(cmd)
    views = record["render"]["render_n_images"] / record["n_structures"]
    return {"date": dates[0], "px": f"{cfg.render.image_size}", "views": f"{views:.0f}",
            "grouped": GROUPS[cfg.split.group_by]}  # fmt: skip


def baseline_meta(record: dict) -> dict:
    """How the record's baselines were made (a run's ``pooled.baselines``, a seed-merged record's ``baselines``)."""
    return record.get("pooled", {}).get("baselines") or record.get("baselines", {})


def trees(record: dict) -> str:
    """The tabular baseline's estimator as the record names it (``random forest``)."""
    return baseline_meta(record).get("tabular", {}).get("estimator", "random_forest").replace("_", " ")


def labels(record: dict) -> dict[str, str]:
    """Each method's name in README, with the trees' estimator and CGCNN's size as the record gives them."""
    metrics, baselines = record["metrics"], baseline_meta(record)
    cgcnn = st.cgcnn_label(metrics).removeprefix("CGCNN ")
    stop = ", early stopping" if baselines.get("cgcnn", {}).get("patience") else ""
    return {"model": "image model", "tabular": f"trees: {trees(record)} on composition + primitive cell",
            "cgcnn": f"CGCNN graph network ({cgcnn}{stop})", "1nn": "1-NN descriptor lookup",
            "dummy": "majority class / mean"}  # fmt: skip


def pooled(metrics: dict, p: str, m: str, h: str) -> float | None:
    """A method's pooled out-of-fold score (``space_table.py``'s keys); None when the record has none."""
    return metrics.get(f"pooled_{p}_{m}_{h}")


def pooled_cell(metrics: dict, p: str, m: str, h: str) -> str:
    """``0.46 [0.43, 0.49]`` where the record has the interval (the image model), else ``0.83``; blank if absent."""
    key = f"pooled_{p}_{m}_{h}"
    if f"{key}_lo" in metrics:
        return st.interval({"value": metrics[key], "lo": metrics[f"{key}_lo"], "hi": metrics[f"{key}_hi"]})
    return f"{metrics[key]:.2f}" if key in metrics else ""


def folds(metrics: dict, p: str, m: str, h: str) -> tuple[float, float] | None:
    """A method's mean and sample std over folds; None when the record has none."""
    key = f"{FOLD_KEYS[p]}_{m}_{h}"
    return (metrics[f"{key}_mean"], metrics[f"{key}_std"]) if f"{key}_mean" in metrics else None


def seeds(metrics: dict) -> str:
    n = int(metrics.get("pooled_n_seeds", metrics.get("n_seeds", 1)))
    return "one seed" if n == 1 else f"{n} seeds"


def quaternary_sentence(record: dict, path: str, date: str) -> str:
    """The 62 quaternaries alone: does any model of the record beat the majority class on crystal system?"""
    m = record["metrics"]
    cells = {p: v for p in ORDER if (v := folds(m, p, "acc", "crystal_system"))}
    names = {"model": "image model", "tabular": "trees", "cgcnn": "CGCNN", "1nn": "1-NN", "dummy": "majority"}
    majority = cells["dummy"][0]
    subjects = {"model": "the image model", "tabular": "the trees", "cgcnn": "CGCNN", "1nn": "the 1-NN lookup"}
    better = [subjects[p] for p, (v, _) in cells.items() if p != "dummy" and v > majority]
    claim = ("no model in its record beats the majority class" if not better
             else f"{' and '.join(better)} beat{'s' if len(better) == 1 else ''} the majority class")  # fmt: skip
    values = ", ".join(f"{names[p]} {v:.2f} ± {s:.2f}" for p, (v, s) in cells.items())
    return (
        f"On the {record['n_structures']} bundled quaternaries alone {claim} on crystal system (per structure, "
        f"mean ± sample std over {m['n_folds']:.0f} folds: {values}; `{path}`, {date})."
    )


def merged_info(record: dict, cmd: Path) -> dict[str, str]:
    """A seed-merged record's run dates and hardware (from its parts) and the seeds not run yet: those its ``.cmd``'s
    ``seed_record.py merge ... --seeds`` line names that the record lacks."""
    parts = list(record["parts"].values())  # keyed by seed
    dates = sorted({p["started"][:10] for p in parts})
    planned: list[int] = []
    lines = cmd.read_text().replace("\\\n", " ").splitlines() if cmd.is_file() else []
    for line in lines:
        words = shlex.split(line) if "seed_record.py merge" in line and not line.startswith("#") else []
        if "--seeds" in words:
            planned = [int(w) for w in takewhile(str.isdigit, words[words.index("--seeds") + 1 :])]
    return {"date": dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}",
            "hardware": "; ".join(sorted({p["hardware"] for p in parts})),
            "missing": ", ".join(str(s) for s in planned if s not in record["seeds"])}  # fmt: skip


def listing(items: list[str]) -> str:
    """``a, b and c``."""
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def seed_words(record: dict, missing: str) -> str:
    """``2 training seeds, seed 2 not run yet``: the seeds the record averages over, and those still to run."""
    n = len(record["seeds"])
    text = "one training seed" if n == 1 else f"{n} training seeds"
    return text + (f", seed{'s' if ',' in missing else ''} {missing} not run yet" if missing else "")


def model_cell(metrics: dict, h: str, metric: str) -> str:
    """``0.45 [0.42, 0.48] ± 0.01``: the image model's pooled score, its interval and, over seeds, its std."""
    text = pooled_cell(metrics, "model", metric, h)
    std = metrics.get(f"pooled_model_{metric}_{h}_seed_std")
    return text + (f" ± {std:.2f}" if std is not None and metrics.get("pooled_n_seeds", 1) > 1 else "")


def diff(metrics: dict, p: str, metric: str = "acc", h: str = "crystal_system") -> tuple[str, str]:
    """The image model against baseline ``p`` on a head, paired over structures: ``beats`` / ``trails`` where the
    difference's 95 % interval is clear of zero, else ``is level with``; and ``+0.10 [+0.06, +0.13]``."""
    key = f"pooled_diff_model_vs_{p}_{metric}_{h}"
    d, lo, hi = metrics[key], metrics[f"{key}_lo"], metrics[f"{key}_hi"]
    verb = "beats" if lo > 0 else "trails" if hi < 0 else "is level with"
    return verb, f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def paired(metrics: dict, p: str, name: str) -> str:
    """Whether the image model beats baseline ``p`` on crystal system: its paired difference's interval decides."""
    verb, text = diff(metrics, p)
    return f"{verb} {name} ({text})"


def space_sentence(record: dict, path: str, info: dict[str, str]) -> str:
    """The whole space: the image model's crystal-system accuracy against every baseline, where the strongest
    baseline stands on the other heads, and whether the image model beats the majority class and the strongest."""
    m = record["metrics"]
    words = {"dummy": "the most frequent class", "1nn": "a descriptor lookup", "cgcnn": "a graph network",
             "tabular": f"a {trees(record)} on composition and the primitive cell"}  # fmt: skip
    names = {"model": "image model", "dummy": "majority", "1nn": "1-NN", "cgcnn": "CGCNN", "tabular": "trees"}
    subjects = {"dummy": "the majority", "1nn": "the 1-NN lookup", "cgcnn": "CGCNN", "tabular": "the trees"}
    acc = {p: v for p in ["dummy", "1nn", "cgcnn", "tabular"] if (v := pooled(m, p, "acc", "crystal_system"))}
    best = max(acc, key=acc.get)
    parts = [f"{names[p]} {acc[p]:.2f}" for p in acc if p != best]
    parts.append(f"**{names[best]} {acc[best]:.2f}** ({words[best]}), the strongest baseline")
    leads, trails = [], []
    for h, metric, _ in HEADS[1:]:
        values = {p: v for p in ORDER if (v := pooled(m, p, metric, h)) is not None}
        r2 = "R² " if metric == "r2" else ""
        leader = max(values, key=values.get)
        if leader == best:
            leads.append(f"{WORDS[h]} ({r2}{values[best]:.2f} against {values['model']:.2f})")
        else:
            model = f"; image model {values['model']:.2f}" if leader != "model" else ""
            who = subjects.get(leader, "the image model")
            trails.append(f"{who} on {WORDS[h]} ({r2}{values[best]:.2f} against {values[leader]:.2f}{model})")
    tail = ", which also leads on " + listing(leads) if leads else ""
    if trails:
        tail += (" and" if leads else ", which") + " trails " + listing(trails)
    grouped = GROUPS.get(record.get("group_by"), "structure")
    return (
        f"On the whole Li-Mn-Ni-O space ({record['n_structures']} structures; folds grouped by {grouped}, "
        f"{seed_words(record, info['missing'])}; `{path}`, {info['date']}, {info['hardware']}) the image model reaches "
        f"crystal-system accuracy **{model_cell(m, 'crystal_system', 'acc')}** (per structure, 95 % interval ± std "
        f"over seeds) against {', '.join(parts[:-1])} and {parts[-1]}{tail}. Paired over structures, the image model "
        f"{paired(m, 'dummy', subjects['dummy'])} and {paired(m, best, subjects[best])}."
    )


def material_sentence(strict: dict, material: dict, path: str, date: str) -> str:
    """The image model under material-id grouping, set against the strict record's interval per head: inside it is
    about the same, outside higher or lower. Empty when the records score different structures."""
    if strict["n_structures"] != material["n_structures"]:
        return ""
    same, moved = [], {"higher": [], "lower": []}
    for h, metric, _ in HEADS:
        key = f"pooled_model_{metric}_{h}"
        v, lo, hi = material["metrics"][key], strict["metrics"][f"{key}_lo"], strict["metrics"][f"{key}_hi"]
        text = f"{WORDS[h]} ({'R² ' if metric == 'r2' else ''}{v:.2f})"
        (same if lo <= v <= hi else moved["higher" if v > hi else "lower"]).append(text)
    said = [f"about the same on {listing(same)}"] if same else []
    said += [f"{w} on {listing(t)}" for w, t in moved.items() if t]  # higher: the stricter grouping costs
    return f"Grouping by material id (`{path}`, {seeds(material['metrics'])}, {date}) gave it {'; '.join(said)}."


def holdout_sentence(record: dict, path: str, info: dict[str, str]) -> str:
    """The hold-out that no selection saw: the image model's crystal-system accuracy against the majority class and
    the trees, paired over its structures."""
    m, n = record["metrics"], holdout_count(record)
    values = ", ".join(f"{name} {pooled(m, p, 'acc', 'crystal_system'):.2f}" for p, name in (("dummy", "majority"),
                       ("1nn", "1-NN"), ("tabular", "trees")))  # fmt: skip
    return (
        f"On {n} structures held out from every selection of radii, recipe and baselines (`{path}`, "
        f"{seed_words(record, info['missing'])}, {info['date']}) its crystal-system accuracy per structure is "
        f"{model_cell(m, 'crystal_system', 'acc')} against {values}; it {paired(m, 'dummy', 'the majority')} and "
        f"{paired(m, 'tabular', 'the trees')}."
    )


def holdout_count(record: dict) -> int:
    """How many of the hold-out's structures a record tested."""
    return int(record["holdout"].get("n_tested", record["holdout"]["n_ids"]))


def headline(records: Path) -> str:
    """The "honest number" bullet of README's "Why it exists, and its limits"."""
    quat, material = (json.loads((records / name).read_text()) for name in (QUATERNARIES, SPACE))
    strict, hold = (json.loads((records / name).read_text()) for name in (FORMULA, HOLDOUT))
    info = merged_info(strict, (records / FORMULA).parent.with_suffix(".cmd"))
    hold_info = merged_info(hold, (records / HOLDOUT).parent.with_suffix(".cmd"))
    text = " ".join([
        "- **The honest number** comes from folds grouped by structure (every structure tested once, never seen in "
        "training).",
        quaternary_sentence(quat, shown(records / QUATERNARIES), run_info(records / QUATERNARIES, quat)["date"]),
        space_sentence(strict, shown(records / FORMULA), info),
        material_sentence(strict, material, SPACE, run_info(records / SPACE, material)["date"]),
        holdout_sentence(hold, shown(records / HOLDOUT), hold_info),
        "See [the study](docs/study.md).",
    ])  # fmt: skip
    return wrap(" ".join(text.split()), indent="  ") + "\n"


def wrap(text: str, indent: str, width: int = 117) -> str:
    """``text`` wrapped at README's width, continuation lines indented (a Markdown list item)."""
    links = re.sub(r"\[[^\]]*\]\([^)]*\)", lambda m: m.group(0).replace(" ", "\0"), text)  # a link stays whole
    lines, line = [], ""
    for word in links.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line]).replace("\0", " ")


def merged_cell(metrics: dict) -> Callable[[str, str, str], str]:
    """A seed-merged record's table cell for (method, metric, head): the image model with its interval and std over
    seeds, a baseline with its spread where its seeds differ."""
    return lambda p, metric, h: (model_cell(metrics, h, metric) if p == "model"
                                 else st.value_cell(metrics, f"pooled_{p}_{metric}_{h}", spread=True))  # fmt: skip


def results(records: Path) -> str:
    """README's "Headline results": one table (the formula-grouped space, the same space grouped by material id,
    the 62 quaternaries), the formula-grouped image model's paired differences on crystal system, and the verdict."""
    names = (FORMULA, HOLDOUT, SPACE, QUATERNARIES)
    strict, hold, space, quat = (json.loads((records / name).read_text()) for name in names)
    fm, hm, sm, qm = strict["metrics"], hold["metrics"], space["metrics"], quat["metrics"]
    cmd, hold_cmd = ((records / name).parent.with_suffix(".cmd") for name in (FORMULA, HOLDOUT))
    info, cfg = merged_info(strict, cmd), pipeline_config(cmd)
    hold_info, hold_cfg, n_hold = merged_info(hold, hold_cmd), pipeline_config(hold_cmd), holdout_count(hold)
    si, qi = run_info(records / SPACE, space), run_info(records / QUATERNARIES, quat)
    grouped, n = GROUPS[strict["group_by"]], strict["n_structures"]
    same = all(
        round(fm.get(f"pooled_{p}_{metric}_{h}_seed_std", 0.0), 2) == 0 for p in ORDER[1:] for h, metric, _ in HEADS
    )
    head = (
        "Scores per structure. The Li-Mn-Ni-O space pooled out of fold (each structure predicted once by a model that "
        f"never saw it): on {fm['n_folds']:.0f} folds grouped by {grouped}, {seed_words(strict, info['missing'])} "
        "(the image model: mean over seeds, 95 % interval over structures ± sample std over seeds; "
        f"{'the baselines score the same with every seed' if same else 'a baseline: ± where its seeds differ'}), "
        f"on the {n_hold} structures of a hold-out that no selection of radii, recipe or baselines saw, trained on "
        f"the other {hold['n_structures'] - n_hold} (no formula on both sides), "
        f"{seed_words(hold, hold_info['missing'])}; and on {sm['n_folds']:.0f} folds grouped by {si['grouped']}, "
        f"{seeds(sm)} (95 % interval). The "
        f"{quat['n_structures']} quaternaries: {qm['n_folds']:.0f} folds grouped by {qi['grouped']}, {seeds(qm)}, mean "
        "± sample std over folds. Band gap and e_hull are surrogate labels; the band gaps are a pretrained CGCNN's "
        "predictions, which favours CGCNN on that head."
    )
    wild = [f"{v:.2f}" for r in (fm, hm, sm) if (v := r.get("pooled_cgcnn_r2_band_gap", 0.0)) < -1]
    if wild:
        head += (f" CGCNN's band-gap R² ({listing(wild)}) comes from one or two structures per record that it "
                 "predicts far outside the labels' range ([the study](docs/study.md#on-the-structure-hold-out) "
                 "names them).")  # fmt: skip
    blocks = [
        (f"{n}, Li-Mn-Ni-O space, grouped by {grouped}, {seeds(fm)} (`{FORMULA}`, {info['date']}, "
         f"{cfg.render.image_size} px, {cfg.render.views_per_structure} views)", strict,
         merged_cell(fm)),
        (f"{n_hold}, the hold-out no selection saw, {seeds(hm)} (`{HOLDOUT}`, {hold_info['date']}, "
         f"{hold_cfg.render.image_size} px, {hold_cfg.render.views_per_structure} views)", hold,
         merged_cell(hm)),
        (f"{space['n_structures']}, Li-Mn-Ni-O space, grouped by {si['grouped']}, {seeds(sm)} (`{SPACE}`, "
         f"{si['date']}, {si['px']} px, {si['views']} views)", space,
         lambda p, metric, h: pooled_cell(sm, p, metric, h)),
        (f"{quat['n_structures']} quaternaries, grouped by {qi['grouped']}, {seeds(qm)} (`{QUATERNARIES}`, "
         f"{qi['date']}, {qi['px']} px, {qi['views']} views)", quat,
         lambda p, metric, h: f"{c[0]:.2f} ± {c[1]:.2f}" if (c := folds(qm, p, metric, h)) else ""),
    ]  # fmt: skip
    lines = [
        "| structures (record) | method | " + " | ".join(t for *_, t in HEADS) + " |",
        "|---|---|" + "---|" * len(HEADS),
    ]
    for scope, record, cell in blocks:
        for p, label in labels(record).items():
            if any(cells := [cell(p, metric, h) for h, metric, _ in HEADS]):
                lines.append(row(scope, label, cells))
                scope = ""
    names = {"tabular": "trees", "cgcnn": "CGCNN", "1nn": "1-NN", "dummy": "majority class"}
    diffs = [
        f"{name} {diff(fm, p)[1]}" for p, name in names.items() if f"pooled_diff_model_vs_{p}_acc_crystal_system" in fm
    ]
    tail = (
        f"Image model minus each baseline on crystal-system accuracy, folds grouped by {grouped}, mean over "
        f"{seeds(fm)}, paired over the {n} structures (95 % interval): {', '.join(diffs)}."
    )
    text = [wrap(head, indent=""), "\n".join(lines), wrap(tail, indent=""), wrap(verdict(strict), indent="")]
    return "\n\n".join(text) + "\n"


def verdict(record: dict) -> str:
    """Whether the image model of a seed-merged record is worth shipping: against the trees on every head, the
    majority class on the class heads and the 1-NN lookup on crystal system (the paired intervals decide), and its
    band-gap R² against the 0.5 a useful model needs (its interval decides)."""
    m, said, behind = record["metrics"], [], False
    for p, name, heads in (("tabular", "the trees", HEADS), ("dummy", "the majority class", HEADS[:2]),
                           ("1nn", "the 1-NN lookup", HEADS[:1])):  # fmt: skip
        verbs: dict[str, list[str]] = {}
        for h, metric, _ in heads:
            if f"pooled_diff_model_vs_{p}_{metric}_{h}" in m:
                verb, text = diff(m, p, metric, h)
                verbs.setdefault(verb, []).append(f"{WORDS[h]} ({'R² ' if metric == 'r2' else ''}{text})")
        behind |= "trails" in verbs
        said += [f"{verb} {name} on {listing(items)}" for verb, items in verbs.items()]
    lo, hi = m["pooled_model_r2_band_gap_lo"], m["pooled_model_r2_band_gap_hi"]
    where = "below" if hi < 0.5 else "above" if lo > 0.5 else "not clear of"
    ready = not behind and lo > 0.5
    lead = "holds its own against these baselines" if ready else "is not yet a model worth shipping"
    ships = "no reference model ships with the package yet" if ready else "so no reference model ships with the package"
    return (
        f"**The image model {lead}**: on folds grouped by {GROUPS[record['group_by']]} ({seeds(m)}, paired over "
        f"structures, 95 % intervals) it {listing(said)}; its band-gap R² ({model_cell(m, 'band_gap', 'r2')}) is "
        f"{where} the 0.5 a useful model needs, {ships}; `space.yaml` registers one whose card carries its own "
        "measured generalisation ([where it stands](docs/study.md#where-the-image-model-stands))."
    )


def row(scope: str, label: str, cells: list[str]) -> str:
    """A table row; the scope cell only on a record's first row."""
    rest = " | ".join([label, *cells])
    return f"| {scope} | {rest} |" if scope else f"| | {rest} |"


def update(text: str, records: Path) -> str:
    """``text`` (README.md) with both generated blocks rewritten from the records."""
    text = st.replace_between(text, "readme-headline", headline(records))
    return st.replace_between(text, "readme-results", results(records))


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=Path, nargs="?", default=HERE / "records")
    ap.add_argument("--readme", type=Path, help="Rewrite this page's readme-headline and readme-results blocks.")
    args = ap.parse_args(argv)
    if args.readme:
        text = update(args.readme.read_text(), args.records)
        args.readme.write_text(text)
        return text
    text = headline(args.records) + "\n" + results(args.records)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()

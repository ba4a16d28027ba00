"""K-fold splits of the labels table and the mean ± std of per-fold metrics.

``split.folds: K`` with ``protocol: grouped`` gives K folds grouped by structure: every structure is in exactly
one test fold, and each fold's validation structures are carved (grouped: whole structures) from its training
structures. ``split.group_by`` sets what "unseen" means: ``material`` (one structure per group), ``formula`` (every
structure of one reduced formula on one side) or ``structure_cluster`` (structures that pymatgen's
``StructureMatcher`` matches, :mod:`crystalvision.data.clusters`); test folds and validation carve-outs both
follow it. Test folds and validation carve-outs are stratified by crystal system where the class sizes allow it
(scikit-learn's ``StratifiedGroupKFold`` / ``StratifiedKFold`` over structures; classes with fewer than K structures
are pooled into one stratum), otherwise ``GroupKFold`` / ``GroupShuffleSplit``. ``split.test_only`` (e.g.
``nelements: 4``) makes the K folds over those structures only; every other structure is always trained on.
``split.leave_one_out: true`` makes one fold per structure (small snapshots). With ``protocol: image`` the folds
are plain stratified k-fold over images (the study's leaky protocol, for comparison).

Classes present in a fold's test part but absent from its training part are logged and kept on the fold
(:attr:`FoldSplits.unseen_classes`): the model cannot predict them there. The fold's *ceiling*
(:func:`ceiling_metrics`) is the share of its test structures whose class its training part has, i.e. the best
accuracy of a classifier that predicts only classes it was trained on. :func:`split_plan` describes the folds of a
structure table without rendering (``crystalvision pipeline validate``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold, StratifiedGroupKFold, StratifiedKFold

from crystalvision.core import ConfigError, SplitConfig, StructureFilter
from crystalvision.data.clusters import group_series
from crystalvision.data.dataset import Splits

log = logging.getLogger(__name__)

CLASS_COLUMNS = ("crystal_system", "spacegroup_symbol")
HEAD_OF = {"crystal_system": "crystal_system", "spacegroup_symbol": "spacegroup"}
RARE = "__rare__"


@dataclass
class FoldSplits(Splits):
    """One fold: a :class:`~crystalvision.data.dataset.Splits` plus its index and the test classes unseen in
    training."""

    fold: int = 0
    n_folds: int = 1
    stratified: bool = False
    val_stratified: bool = False
    unseen_classes: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out |= {"fold": self.fold, "n_folds": self.n_folds, "fold_stratified": self.stratified}
        out["val_stratified"] = self.val_stratified
        for col, classes in self.unseen_classes.items():
            out[f"n_unseen_test_classes_{col}"] = len(classes)
        return out | ceiling_metrics(self.train, self.test)


def n_folds_for(cfg: SplitConfig, n_structures: int, n_images: int, n_groups: int | None = None) -> int:
    """The number of folds ``cfg`` asks for; a ConfigError names the key when it cannot be met."""
    if cfg.leave_one_out:
        if cfg.protocol != "grouped":
            raise ConfigError("split.leave_one_out needs split.protocol: grouped (it leaves out one structure)")
        if cfg.group_by != "material":
            raise ConfigError("split.leave_one_out leaves out one structure: it needs split.group_by: material")
        if n_structures < 3:
            raise ConfigError(f"split.leave_one_out needs at least 3 structures, the selection has {n_structures}")
        return n_structures
    k = cfg.folds or 0
    limit = (n_groups or n_structures) if cfg.protocol == "grouped" else n_images
    unit = "images" if cfg.protocol != "grouped" else "structures" if cfg.group_by == "material" else cfg.group_by
    unit += " groups" if cfg.protocol == "grouped" and cfg.group_by != "material" else ""
    if k < 2 or k > limit:
        raise ConfigError(
            f"split.folds = {cfg.folds} is outside its allowed range 2..{limit} (the number of {unit} selected); "
            "lower split.folds, use split.leave_one_out, or select more structures"
        )
    return k


def stratum(labels: Sequence[str], k: int) -> np.ndarray | None:
    """Stratification labels: classes with fewer than ``k`` members pooled; None when stratifying is impossible."""
    y = pd.Series(np.asarray(labels, dtype=object))
    counts = y.value_counts()
    pooled = y.where(y.map(counts) >= k, RARE)
    pooled_counts = pooled.value_counts()
    if RARE in pooled_counts and pooled_counts[RARE] < k and len(pooled_counts) > 1:
        largest = pooled_counts.drop(RARE).idxmax()
        pooled = pooled.replace(RARE, largest)
    return pooled.to_numpy() if pooled.nunique() >= 2 else None


def _test_indices(keys: pd.DataFrame, k: int, seed: int, grouped: bool) -> tuple[list[np.ndarray], bool]:
    """Row indices of ``keys`` in each test fold, and whether the folds are stratified."""
    y = stratum(keys["crystal_system"], k)
    x = np.zeros(len(keys))
    if y is not None:
        cls = StratifiedGroupKFold if grouped else StratifiedKFold
        splitter = cls(n_splits=k, shuffle=True, random_state=seed)
        groups = keys["group"].to_numpy() if grouped else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            folds = [test for _, test in splitter.split(x, y, groups=groups)]
        if all(len(f) for f in folds):
            return folds, True
    if grouped:
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [test for _, test in splitter.split(x, groups=keys["group"].to_numpy())], False
    return [test for _, test in KFold(n_splits=k, shuffle=True, random_state=seed).split(x)], False


def _carve_val(
    rest: pd.DataFrame, cfg: SplitConfig, seed: int, grouped: bool
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Validation part of a fold's training rows (whole structures when grouped, stratified by crystal system where
    class sizes allow); returns (train, val, stratified)."""
    if not grouped:
        idx = np.random.default_rng(seed).permutation(len(rest))
        n_val = min(len(rest) - 1, max(1, round(cfg.val_fraction * len(rest))))
        return rest.iloc[idx[n_val:]], rest.iloc[idx[:n_val]], False
    keys = rest.drop_duplicates("material_id")[["material_id", "crystal_system", "group"]].reset_index(drop=True)
    if len(keys) < 2:
        raise ConfigError("a grouped fold needs at least 2 training structures; lower split.folds")
    k = min(len(keys), max(2, round(1 / cfg.val_fraction)))
    y = stratum(keys["crystal_system"], k)
    held_ids, stratified = None, False
    if cfg.group_by != "material":
        held_ids, stratified = _carve_groups(keys, y, k, seed)
    elif y is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            _, held = next(splitter.split(np.zeros(len(keys)), y))
        held_ids, stratified = set(keys["material_id"].iloc[held]), True
    else:
        gss = GroupShuffleSplit(n_splits=1, test_size=cfg.val_fraction, random_state=seed)
        _, held = next(gss.split(keys, groups=keys["material_id"]))
        held_ids = set(keys["material_id"].iloc[held])
    in_val = rest["material_id"].isin(held_ids).to_numpy()
    return rest[~in_val], rest[in_val], stratified


def _carve_groups(keys: pd.DataFrame, y: np.ndarray | None, k: int, seed: int) -> tuple[set[str], bool]:
    """A validation carve-out of whole groups (``split.group_by`` other than material): one fold of a stratified
    group k-fold where stratifying is possible and leaves both sides non-empty, else a group shuffle split."""
    groups = keys["group"].to_numpy()
    if keys["group"].nunique() < 2:
        raise ConfigError("a grouped fold needs at least 2 training groups; lower split.folds or group by material")
    if y is not None and keys["group"].nunique() >= k:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            _, held = next(splitter.split(np.zeros(len(keys)), y, groups=groups))
        if 0 < len(held) < len(keys):
            return set(keys["material_id"].iloc[held]), True
    gss = GroupShuffleSplit(n_splits=1, test_size=1 / k, random_state=seed)
    _, held = next(gss.split(keys, groups=groups))
    return set(keys["material_id"].iloc[held]), False


def unseen_classes(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, list[str]]:
    """Per class column: classes in ``test`` with no training example."""
    return {
        col: sorted(set(test[col].astype(str)) - set(train[col].astype(str)))
        for col in CLASS_COLUMNS
        if col in test and col in train
    }


def ceiling_metrics(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """Per head: ``unseen_share_<head>`` (test structures whose class ``train`` lacks) and ``ceiling_acc_<head>``
    (1 minus that: the best accuracy on ``test`` of a classifier that predicts only the classes of ``train``)."""
    if not len(test):
        return {}
    tests = test.drop_duplicates("material_id")
    out: dict[str, float] = {}
    for col in CLASS_COLUMNS:
        if col in test and col in train:
            share = float((~tests[col].astype(str).isin(set(train[col].astype(str)))).mean())
            out |= {f"unseen_share_{HEAD_OF[col]}": share, f"ceiling_acc_{HEAD_OF[col]}": 1.0 - share}
    return out


def nelements(df: pd.DataFrame) -> pd.Series:
    """Number of distinct elements of each row's structure: the ``nelements`` column, else from ``formula``."""
    if "nelements" in df:
        return df["nelements"].astype(int)
    if "formula" not in df:
        raise ConfigError("selecting structures by nelements needs the labels table's formula column; render again")
    from pymatgen.core import Composition

    counts = {f: len(Composition(f).elements) for f in df["formula"].unique()}
    return df["formula"].map(counts).astype(int)


def matches(df: pd.DataFrame, flt: StructureFilter) -> pd.Series:
    """Boolean mask of the rows whose structure passes ``flt``."""
    return nelements(df) == flt.nelements


def _structure_keys(df: pd.DataFrame, grouped: bool) -> pd.DataFrame:
    cols = ["material_id", "crystal_system", "group"]
    return (df.drop_duplicates("material_id") if grouped else df)[cols].reset_index(drop=True)


def fold_splits(df: pd.DataFrame, cfg: SplitConfig, clusters: Mapping[str, str] | None = None) -> list[FoldSplits]:
    """The labels table -> one :class:`FoldSplits` per fold (``split.folds`` or ``split.leave_one_out``), grouped
    by ``split.group_by`` (``clusters``: material id -> structure cluster, for ``structure_cluster``)."""
    grouped = cfg.protocol == "grouped"
    group = group_series(df, cfg.group_by if grouped else "material", clusters)
    df = df.assign(group=group.to_numpy())
    pool = df
    if cfg.test_only is not None:
        if not grouped:
            raise ConfigError("split.test_only needs split.protocol: grouped (it picks test structures)")
        pool = df[matches(df, cfg.test_only).to_numpy()]
        if pool.empty:
            raise ConfigError(f"split.test_only {cfg.test_only.model_dump()} matches no selected structure")
    keys = _structure_keys(pool, grouped)
    k = n_folds_for(cfg, pool["material_id"].nunique(), len(pool), pool["group"].nunique())
    if cfg.leave_one_out:
        tests, stratified = [np.array([i]) for i in range(len(keys))], False
    else:
        tests, stratified = _test_indices(keys, k, cfg.seed, grouped)
    out: list[FoldSplits] = []
    for i, test_idx in enumerate(tests):
        if grouped:
            in_test = df["material_id"].isin(set(keys["material_id"].iloc[test_idx]))
        else:
            in_test = pd.Series(False, index=df.index)
            in_test.iloc[test_idx] = True
        test, rest = df[in_test.to_numpy()], df[~in_test.to_numpy()]
        train, val, val_strat = _carve_val(rest, cfg, cfg.seed + i, grouped)
        parts = [
            x.drop(columns="group").sample(frac=1.0, random_state=cfg.seed + i).reset_index(drop=True)
            for x in (train, val, test)
        ]
        unseen = unseen_classes(parts[0], parts[2])
        for col, classes in unseen.items():
            if classes:
                log.warning("fold %d (of 0-%d): test %s classes with no training example: %s", i, k - 1, col, classes)
        fold = FoldSplits(*parts, protocol=cfg.protocol, seed=cfg.seed, fold=i, n_folds=k, stratified=stratified)
        fold.unseen_classes, fold.val_stratified = unseen, val_strat
        out.append(fold)
    by = f", grouped by {cfg.group_by}" if grouped else ""
    log.info(
        "%d %s folds (%s%s)", k, cfg.protocol, "stratified by crystal system" if stratified else "unstratified", by
    )
    return out


def split_plan(
    df: pd.DataFrame, cfg: SplitConfig, clusters: Mapping[str, str] | None = None, folds: Sequence[Any] | None = None
) -> dict[str, Any]:
    """What :func:`fold_splits` (or ``folds``) makes of ``df``: per fold its sizes, test systems, unseen, ceiling."""
    rows = []
    for f in fold_splits(df, cfg, clusters) if folds is None else folds:
        test = f.test.drop_duplicates("material_id")
        rows.append(
            {
                "fold": f.fold,
                **{f"n_structures_{name}": int(part["material_id"].nunique()) for name, part in f.items()},
                "test_crystal_system": test["crystal_system"].value_counts().sort_index().to_dict(),
                "unseen_test_classes": {HEAD_OF[c]: v for c, v in f.unseen_classes.items()},
                **ceiling_metrics(f.train, f.test),
                "stratified": f.stratified,
                "val_stratified": f.val_stratified,
            }
        )
    systems = df.drop_duplicates("material_id")["crystal_system"].value_counts().sort_index().to_dict()
    return {"n_structures": int(df["material_id"].nunique()), "crystal_system": systems, "folds": rows}


def plan_text(plan: Mapping[str, Any], cfg: SplitConfig) -> str:
    """:func:`split_plan` as a readable table (``crystalvision pipeline validate``)."""
    systems = ", ".join(f"{k} {v}" for k, v in plan["crystal_system"].items())
    only = f"; tested: only nelements={cfg.test_only.nelements}" if cfg.test_only else ""
    lines = [
        f"resolved split: {len(plan['folds'])} {cfg.protocol} folds over {plan['n_structures']} structures{only}"
        + (f", grouped by {cfg.group_by}" if cfg.protocol == "grouped" else ""),
        f"crystal systems: {systems}",
        "fold  train  val  test  ceiling system  ceiling space group  stratified (test, val)",
    ]
    for f in plan["folds"]:
        sizes = f"{f['fold']:>4}  {f['n_structures_train']:>5}  {f['n_structures_val']:>3}  {f['n_structures_test']:>4}"
        ceil = [f.get(f"ceiling_acc_{h}", math.nan) for h in ("crystal_system", "spacegroup")]
        lines.append(f"{sizes}  {ceil[0]:>14.3f}  {ceil[1]:>19.3f}  {f['stratified']}, {f['val_stratified']}")
        per_class = ", ".join(f"{k} {v}" for k, v in f["test_crystal_system"].items())
        lines.append(f"      test per crystal system: {per_class}")
        for head, classes in f["unseen_test_classes"].items():
            if classes:
                lines.append(f"      unseen in training ({head}): {', '.join(classes)}")
    return "\n".join(lines)


def nested_order(train: pd.DataFrame, seed: int) -> list[str]:
    """A fold's training structures in one seeded order whose every prefix keeps the crystal-system shares.

    Each structure gets the key (rank within its class + U(0, 1)) / class size, after a seeded shuffle, and the
    structures are sorted by it: a prefix of any length holds about the same share of every class as the whole."""
    keys = train.drop_duplicates("material_id")[["material_id", "crystal_system"]].sort_values("material_id")
    rng = np.random.default_rng(seed)
    keys = keys.iloc[rng.permutation(len(keys))].reset_index(drop=True)
    rank = keys.groupby("crystal_system").cumcount().to_numpy()
    size = keys.groupby("crystal_system")["material_id"].transform("size").to_numpy()
    order = np.argsort((rank + rng.random(len(keys))) / size, kind="stable")
    return keys["material_id"].iloc[order].tolist()


def subset_training(train: pd.DataFrame, n: int, seed: int, fold: int) -> pd.DataFrame:
    """The first ``n`` structures of :func:`nested_order` (all their views); a ConfigError names both sizes."""
    have = train["material_id"].nunique()
    if n > have:
        raise ConfigError(
            f"split.train_structures = {n} is larger than fold {fold}'s training set ({have} structures); "
            f"use sizes up to {have}, or fewer folds"
        )
    keep = set(nested_order(train, seed)[:n])
    return train[train["material_id"].isin(keep)].reset_index(drop=True)


def part_sizes(n: int, n_train: int, n_val: int, fold: int = 0) -> tuple[int, int]:
    """``n`` of a fold's ``n_train + n_val`` structures split in the fold's own train:val ratio: (train, val), at
    least one of each when the fold has validation structures. A ConfigError names the sizes that cannot be met."""
    have = n_train + n_val
    if n > have:
        raise ConfigError(
            f"split.train_structures = {n} is larger than fold {fold}'s training + validation structures ({have}); "
            f"use sizes up to {have}, or fewer folds"
        )
    if n_val == 0:
        return n, 0
    if n < 2:
        raise ConfigError(
            f"split.train_structures = {n} leaves no validation structure in fold {fold}: use 2 or more (the "
            "validation part is cut in the fold's train:val ratio)"
        )
    n_v = min(n - 1, max(1, round(n * n_val / have)))
    return n - n_v, n_v


def subset_folds(folds: Sequence[FoldSplits], split: SplitConfig) -> list[FoldSplits]:
    """Each fold with its training and validation parts cut to ``split.train_structures`` structures together
    (unchanged when that is unset): a point of a learning curve, whose every method sees those structures.

    The cut keeps the fold's own train:val ratio (:func:`part_sizes`); each part is a prefix of its seeded,
    class-balanced :func:`nested_order`, so a smaller point's structures are a subset of a larger one's. The test
    part is never cut; the unseen test classes follow the smaller training part."""
    if (n := split.train_structures) is None:
        return list(folds)
    out = []
    for f in folds:
        i = getattr(f, "fold", 0)
        n_train, n_val = part_sizes(n, f.train["material_id"].nunique(), f.val["material_id"].nunique(), i)
        train = subset_training(f.train, n_train, split.seed, i)
        val = subset_training(f.val, n_val, split.seed, i) if n_val else f.val
        cut = dataclasses.replace(f, train=train, val=val)
        cut.unseen_classes = unseen_classes(train, cut.test)
        out.append(cut)
    log.info("learning curve point: %d train + val structures per fold (nested, seed %d)", n, split.seed)
    return out


def aggregate_folds(per_fold: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-fold metric dicts -> ``<name>_mean``, ``<name>_std`` (sample std over folds, ddof=1), ``<name>_n``.

    Non-finite values (e.g. R² of a fold with one test structure) are left out of that metric's statistics;
    ``<name>_n`` says over how many folds each mean is (a std needs two). Metric names keep their level
    (``test_``, ``test_struct_``), so per-image and per-structure numbers are both aggregated.
    """
    values: dict[str, list[float]] = {}
    for metrics in per_fold:
        for name, v in metrics.items():
            if v is not None and math.isfinite(float(v)):
                values.setdefault(name, []).append(float(v))
    out: dict[str, float] = {"n_folds": float(len(per_fold))}
    for name, vs in values.items():
        out[f"{name}_mean"] = float(np.mean(vs))
        if len(vs) >= 2:
            out[f"{name}_std"] = float(np.std(vs, ddof=1))
        out[f"{name}_n"] = float(len(vs))
    return out


def mean_std_text(aggregated: Mapping[str, float], name: str, digits: int = 3) -> str:
    """``"0.412 ± 0.051"`` for metric ``name`` of :func:`aggregate_folds` output ("n/a" when absent)."""
    if f"{name}_mean" not in aggregated:
        return "n/a"
    if f"{name}_std" not in aggregated:
        return f"{aggregated[f'{name}_mean']:.{digits}f}"
    return f"{aggregated[f'{name}_mean']:.{digits}f} ± {aggregated[f'{name}_std']:.{digits}f}"

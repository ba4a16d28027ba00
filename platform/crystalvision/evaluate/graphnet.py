"""A crystal-graph baseline (CGCNN-style), trained on the same splits and targets as the image model.

The study compares its image model with a crystal graph network; this is that comparison. Each structure is a
graph built from pymatgen's neighbour list (the ``max_neighbors`` nearest atoms within ``cutoff`` Å, periodic
images included, as CGCNN does), atoms embedded by atomic number, bonds described by a Gaussian expansion of their
length. ``torch_geometric``'s ``CGConv`` (Xie & Grossman 2018) layers with residual connections, mean pooling and
one head per target: band gap and e_above_hull (standardised on the training structures, MSE) and crystal system
and space group (cross-entropy). Early stopping on the validation loss.

Size: by default the published CGCNN (Xie & Grossman 2018, their defaults): 3 convolution layers, 64 atom
features, one 128-wide hidden layer after pooling (``GraphConfig.reference()``). Two departures, both stated
wherever it is reported: atoms are embedded by a learned table over the atomic number (the published model uses a
92-number one-hot atom description, mostly constant over four elements), and training is AdamW with early stopping
on the validation structures (the published SGD schedule was set for tens of thousands of structures).
``GraphConfig.small()`` (2 layers x 32 features) keeps tests fast. As the published code keeps each property's best
validation epoch, every head answers with the weights of the epoch where its own validation loss was lowest
(:func:`fit_graph_model`). Each run reports its budget: epochs trained, the last best epoch of any head, each head's
best epoch and training seconds (``cgcnn_epochs_trained``, ``cgcnn_best_epoch[_<head>]``, ``cgcnn_train_seconds``).

Label note: the bundled snapshot's band gaps are themselves predictions of a *pretrained CGCNN* (see the snapshot's
``labels.md``), so a graph network of the same family is favoured on that target: its band-gap R² measures how well
it re-learns CGCNN, not DFT.

Metrics are per structure (the graph sees a structure once), named like the image model's with a ``cgcnn_``
prefix: ``cgcnn_test_r2_band_gap``, ``cgcnn_test_acc_crystal_system``, ``cgcnn_val_...``, ``cgcnn_test_score``.
Compare them with the image model's ``test_struct_*`` numbers.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure
from torch import nn
from torch.nn import functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import CGConv, global_mean_pool

from crystalvision.core import TARGETS_CLASSIFICATION, TARGETS_REGRESSION, ConfigError, progress
from crystalvision.data import MaterialRecord
from crystalvision.evaluate import metrics as M

log = logging.getLogger(__name__)

CLASS_ID = {"crystal_system": "crystal_system_id", "spacegroup": "spacegroup_id"}
PREFIX = "cgcnn"


class GraphConfig(BaseModel):
    """Graph construction and training of the baseline."""

    model_config = ConfigDict(extra="forbid")

    cutoff: float = Field(default=8.0, gt=0, description="Neighbour radius (Å), CGCNN's default.")
    max_neighbors: int = Field(default=12, ge=1)
    n_gaussians: int = Field(default=40, ge=2)
    atom_features: int = Field(default=64, ge=4, description="Width of the atom features (CGCNN: 64).")
    fc_features: int = Field(default=128, ge=4, description="Hidden layer after pooling (CGCNN: 128).")
    layers: int = Field(default=3, ge=1, description="Convolution layers (CGCNN: 3).")
    epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=30, ge=1)
    lr: float = Field(default=1e-3, gt=0, description="AdamW learning rate (chosen on validation: select-cgcnn.json).")
    weight_decay: float = Field(default=1e-3, ge=0)
    batch_size: int = Field(default=16, ge=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    stopping: Literal["per_head", "joint"] = Field(
        default="per_head",
        description="per_head: each head keeps the epoch of its own lowest validation loss (as the published code "
        "keeps each property's best epoch); joint: one epoch, the lowest summed validation loss.",
    )
    stability_threshold: float = 0.025
    seed: int = 0
    threads: int = Field(default=1, ge=1, description="torch CPU threads (small graphs: more threads only contend).")

    @classmethod
    def reference(cls, **kwargs) -> GraphConfig:
        """The published CGCNN size: 3 convolutions, 64 atom features, 128 hidden."""
        return cls(**({"atom_features": 64, "fc_features": 128, "layers": 3} | kwargs))

    @classmethod
    def small(cls, **kwargs) -> GraphConfig:
        """2 convolutions x 32 atom features, 64 hidden: for tests and quick checks, never a reported baseline."""
        return cls(**({"atom_features": 32, "fc_features": 64, "layers": 2} | kwargs))

    @classmethod
    def sized(cls, size: Literal["reference", "small"], **kwargs) -> GraphConfig:
        return cls.reference(**kwargs) if size == "reference" else cls.small(**kwargs)


@dataclass
class GraphFit:
    """A trained graph model, its target scaling and per-epoch history; each head answers with the weights of the
    epoch where its own validation loss was lowest (``states``, ``best_epochs``)."""

    model: nn.Module
    mean: dict[str, float]
    std: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    states: dict[str, dict] = field(default_factory=dict)
    best_epochs: dict[str, int] = field(default_factory=dict)


def structure_graph(structure: Structure, cfg: GraphConfig) -> Data:
    """A structure -> graph: node ``z`` (atomic numbers), ``edge_index`` (neighbour -> centre), ``edge_attr``."""
    centre, neighbour, _images, dist = structure.get_neighbor_list(r=cfg.cutoff)
    keep = np.zeros(len(centre), dtype=bool)
    for i in range(len(structure)):
        idx = np.flatnonzero(centre == i)
        keep[idx[np.argsort(dist[idx], kind="stable")[: cfg.max_neighbors]]] = True
    centre, neighbour, dist = centre[keep], neighbour[keep], dist[keep]
    if len(centre) == 0:
        raise ConfigError(f"structure {structure.formula} has no neighbours within {cfg.cutoff} Å: raise cutoff")
    mu = torch.linspace(0, cfg.cutoff, cfg.n_gaussians)
    width = cfg.cutoff / (cfg.n_gaussians - 1)
    d = torch.as_tensor(dist, dtype=torch.float32).unsqueeze(1)
    return Data(
        z=torch.as_tensor([site.specie.Z for site in structure], dtype=torch.long),
        edge_index=torch.as_tensor(np.stack([neighbour, centre]), dtype=torch.long),
        edge_attr=torch.exp(-((d - mu) ** 2) / width**2),
        num_nodes=len(structure),
    )


class CrystalGraphNet(nn.Module):
    """Embedding -> ``layers`` × CGConv (residual inside) -> mean pool -> Linear + softplus -> four heads."""

    def __init__(self, cfg: GraphConfig, n_classes: Mapping[str, int]):
        super().__init__()
        atoms, width = cfg.atom_features, cfg.fc_features
        self.embed = nn.Embedding(119, atoms)
        self.convs = nn.ModuleList(CGConv(atoms, dim=cfg.n_gaussians, batch_norm=True) for _ in range(cfg.layers))
        self.mlp = nn.Sequential(nn.Linear(atoms, width), nn.Softplus())
        self.heads = nn.ModuleDict(
            {t: nn.Linear(width, 1) for t in TARGETS_REGRESSION}
            | {t: nn.Linear(width, n_classes[t]) for t in TARGETS_CLASSIFICATION}
        )

    def forward(self, batch: Data) -> dict[str, torch.Tensor]:
        x = self.embed(batch.z)
        for conv in self.convs:
            x = F.softplus(conv(x, batch.edge_index, batch.edge_attr))
        h = self.mlp(global_mean_pool(x, batch.batch))
        out = {t: head(h) for t, head in self.heads.items()}
        return out | {t: out[t].squeeze(-1) for t in TARGETS_REGRESSION}


def structure_labels(df: pd.DataFrame) -> pd.DataFrame:
    """One row per structure of a split frame (labels are constant over views), sorted by material_id."""
    cols = ["material_id", *TARGETS_REGRESSION, *CLASS_ID.values()]
    return df[cols].drop_duplicates("material_id").sort_values("material_id").reset_index(drop=True)


def _dataset(table: pd.DataFrame, graphs: Mapping[str, Data], mean, std) -> list[Data]:
    out = []
    for row in table.itertuples(index=False):
        g = graphs[row.material_id].clone()
        for t in TARGETS_REGRESSION:
            setattr(g, t, torch.tensor([(getattr(row, t) - mean[t]) / std[t]], dtype=torch.float32))
        for t, col in CLASS_ID.items():
            setattr(g, t, torch.tensor([int(getattr(row, col))], dtype=torch.long))
        out.append(g)
    return out


def _head_losses(out: dict[str, torch.Tensor], batch: Data, smoothing: float) -> dict[str, torch.Tensor]:
    reg = {t: F.mse_loss(out[t], batch[t]) for t in TARGETS_REGRESSION}
    cls = {t: F.cross_entropy(out[t], batch[t], label_smoothing=smoothing) for t in TARGETS_CLASSIFICATION}
    return reg | cls


def _loss(out: dict[str, torch.Tensor], batch: Data, smoothing: float) -> torch.Tensor:
    return sum(_head_losses(out, batch, smoothing).values())


@torch.no_grad()
def _val_losses(model: nn.Module, data: list[Data], smoothing: float) -> dict[str, float]:
    """Each head's loss on the validation structures."""
    model.eval()
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    return {t: float(v) for t, v in _head_losses(model(batch), batch, smoothing).items()}


def fit_graph_model(
    train: pd.DataFrame, val: pd.DataFrame, graphs: Mapping[str, Data], n_classes: Mapping[str, int], cfg: GraphConfig
) -> GraphFit:
    """Train on the train structures; keep, per head, the weights of the epoch with that head's lowest validation
    loss (the published CGCNN trains one model per property and keeps its best validation epoch: a summed loss
    would stop where the space-group head starts to overfit, before the regressions have learned); stop when no
    head has improved for ``patience`` epochs."""
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    tr, va = structure_labels(train), structure_labels(val)
    mean = {t: float(tr[t].mean()) for t in TARGETS_REGRESSION}
    std = {t: float(tr[t].std(ddof=0)) or 1.0 for t in TARGETS_REGRESSION}
    train_data, val_data = _dataset(tr, graphs, mean, std), _dataset(va, graphs, mean, std)
    model = CrystalGraphNet(cfg, n_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_data) > cfg.batch_size)
    heads = [*TARGETS_REGRESSION, *TARGETS_CLASSIFICATION]
    best = dict.fromkeys(heads, math.inf)
    states: dict[str, dict] = {}
    best_epochs = dict.fromkeys(heads, 0)
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        progress.beat("evaluate", step="graph baseline", epoch=epoch)
        model.train()
        losses = []
        for batch in loader:
            opt.zero_grad()
            loss = _loss(model(batch), batch, cfg.label_smoothing)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        train_loss = float(np.mean(losses))
        val = _val_losses(model, val_data, cfg.label_smoothing) if val_data else dict.fromkeys(heads, train_loss)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": sum(val.values())}
                       | {f"val_loss_{t}": v for t, v in val.items()})  # fmt: skip
        if cfg.stopping == "joint":  # one epoch for every head: the lowest summed validation loss
            val = dict.fromkeys(heads, sum(val.values()))
        improved = [t for t in heads if val[t] < best[t]]
        if improved:
            state = copy.deepcopy(model.state_dict())
            for t in improved:
                best[t], states[t], best_epochs[t] = val[t], state, epoch
        elif epoch - max(best_epochs.values()) >= cfg.patience:
            break
    last = max(best_epochs.values())
    model.load_state_dict(states[max(best_epochs, key=best_epochs.get)])
    seconds = time.perf_counter() - start
    log.info("cgcnn: best epochs %s of %d (%.0f s)", best_epochs, len(history), seconds)
    return GraphFit(model.eval(), mean, std, last, history, seconds, states, best_epochs)


@torch.no_grad()
def predict_graphs(fit: GraphFit, table: pd.DataFrame, graphs: Mapping[str, Data]) -> dict[str, np.ndarray]:
    """Per structure of ``table``: regression in physical units, class probabilities per head."""
    data = _dataset(table, graphs, fit.mean, fit.std)
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    out: dict[str, torch.Tensor] = {}
    for t in [*TARGETS_REGRESSION, *TARGETS_CLASSIFICATION]:
        if fit.states:  # each head with the weights of its own best validation epoch
            fit.model.load_state_dict(fit.states[t])
        out[t] = fit.model.eval()(batch)[t]
    pred = {t: (out[t] * fit.std[t] + fit.mean[t]).numpy() for t in TARGETS_REGRESSION}
    return pred | {f"{t}_proba": out[t].softmax(-1).numpy() for t in TARGETS_CLASSIFICATION}


def level_metrics(
    level: str, table: pd.DataFrame, pred: Mapping[str, np.ndarray], threshold: float
) -> dict[str, float]:
    """``cgcnn_<level>_<metric>_<target>`` with the evaluate module's metric functions."""
    prefix = f"{PREFIX}_{level}"
    out: dict[str, float] = {}
    for t in TARGETS_REGRESSION:
        out |= M.prefixed(prefix, t, M.regression_metrics(table[t], pred[t]))
    stab = M.stability_metrics(table["energy_above_hull"], pred["energy_above_hull"], threshold)
    out |= {f"{prefix}_stability_{k}": v for k, v in stab.items()}
    for t, col in CLASS_ID.items():
        out |= M.prefixed(prefix, t, M.classification_metrics(table[col].to_numpy(int), pred[f"{t}_proba"]))
    return out


def build_graphs(records: Mapping[str, MaterialRecord], ids, cfg: GraphConfig) -> dict[str, Data]:
    """Graphs of the given material ids; a missing record is a ConfigError naming it."""
    missing = sorted(set(ids) - set(records))
    if missing:
        raise ConfigError(f"graph baseline: no snapshot record for {missing[:5]}; use the split's own snapshot")
    return {m: structure_graph(Structure.from_dict(records[m].structure), cfg) for m in sorted(set(ids))}


def train_graph_baseline(
    records: Mapping[str, MaterialRecord],
    splits,
    cfg: GraphConfig | None = None,
    *,
    n_classes: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Train on ``splits.train`` structures, early-stop on ``splits.val``, score ``splits.test`` (and val).

    ``splits`` is a :class:`~crystalvision.data.dataset.Splits`; ``n_classes`` (head sizes, e.g. from the snapshot's
    encoders) defaults to the largest class id in the splits + 1.
    """
    return graph_baseline(records, splits, cfg, n_classes=n_classes)[0]


def graph_baseline(
    records: Mapping[str, MaterialRecord],
    splits,
    cfg: GraphConfig | None = None,
    *,
    n_classes: Mapping[str, int] | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """:func:`train_graph_baseline`'s metrics and the test structures' predictions (``material_id``, regression
    values, ``<head>_id`` arg-max class ids)."""
    cfg = cfg or GraphConfig()
    frames = [splits.train, splits.val, splits.test]
    if n_classes is None:
        n_classes = {t: int(max(f[col].max() for f in frames)) + 1 for t, col in CLASS_ID.items()}
    graphs = build_graphs(records, pd.concat(f["material_id"] for f in frames).unique(), cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        fit = fit_graph_model(splits.train, splits.val, graphs, n_classes, cfg)
    finally:
        torch.set_num_threads(threads)
    metrics: dict[str, float] = {
        f"{PREFIX}_best_epoch": float(fit.best_epoch),
        **{f"{PREFIX}_best_epoch_{t}": float(e) for t, e in fit.best_epochs.items()},
        f"{PREFIX}_epochs_trained": float(len(fit.history)),
        f"{PREFIX}_train_seconds": fit.seconds,
        f"{PREFIX}_layers": float(cfg.layers),
        f"{PREFIX}_atom_features": float(cfg.atom_features),
        f"{PREFIX}_fc_features": float(cfg.fc_features),
    }
    test_pred = pd.DataFrame({"material_id": []})
    for level, frame in (("test", splits.test), ("val", splits.val)):
        if len(frame):
            table = structure_labels(frame)
            pred = predict_graphs(fit, table, graphs)
            metrics |= level_metrics(level, table, pred, cfg.stability_threshold)
            if level == "test":
                test_pred = table[["material_id"]].assign(**{t: pred[t] for t in TARGETS_REGRESSION})
                test_pred = test_pred.assign(
                    **{f"{t}_id": pred[f"{t}_proba"].argmax(1) for t in TARGETS_CLASSIFICATION}
                )
    parts = [
        metrics.get(f"{PREFIX}_test_{m}", math.nan)
        for m in ("r2_band_gap", "r2_energy_above_hull", "acc_crystal_system", "acc_spacegroup")
    ]
    metrics[f"{PREFIX}_test_score"] = float(np.mean(parts))
    return M.finite(metrics), test_pred

"""Crystal-graph baseline (graphnet.py) on a few bundled structures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crystalvision.core.errors import ConfigError
from crystalvision.data.dataset import Splits
from crystalvision.evaluate.graphnet import GraphConfig, structure_graph, train_graph_baseline


def frame(snapshot, ids) -> pd.DataFrame:
    recs = {r.material_id: r for r in snapshot.records}
    enc = snapshot.encoders
    return pd.DataFrame(
        {
            "material_id": m,
            "view": v,
            "band_gap": recs[m].band_gap,
            "energy_above_hull": recs[m].energy_above_hull,
            "crystal_system_id": enc.encode("crystal_system", recs[m].crystal_system),
            "spacegroup_id": enc.encode("spacegroup", recs[m].spacegroup_symbol),
        }
        for m in ids
        for v in range(2)
    )


def test_graph_keeps_nearest_neighbours_with_periodic_images():
    rock_salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    g = structure_graph(rock_salt.get_primitive_structure(), GraphConfig(max_neighbors=6, cutoff=5.0))
    assert g.num_nodes == 2 and g.z.tolist() == [28, 8]
    assert torch.bincount(g.edge_index[1]).tolist() == [6, 6]  # 6 nearest neighbours of each centre
    assert set(g.edge_index[0].tolist()) == {0, 1} and (g.edge_index[0] != g.edge_index[1]).all()  # Ni-O only
    assert g.edge_attr.shape == (12, 40)
    # Gaussian expansion peaks at the Ni-O distance 2.1 Å
    mu = torch.linspace(0, 5.0, 40)
    assert mu[g.edge_attr[0].argmax()].item() == pytest.approx(2.1, abs=5.0 / 39)


def test_train_graph_baseline_metrics_and_learning(bundled_snapshot):
    ids = sorted(r.material_id for r in bundled_snapshot.records if not r.flags)[:14]
    df = frame(bundled_snapshot, ids)
    # memorisation check: test = the training structures, so a working model must beat the majority class
    splits = Splits(
        df[df.material_id.isin(ids[:12])],
        df[df.material_id.isin(ids[12:])],
        df[df.material_id.isin(ids[:12])],
        protocol="grouped",
        seed=0,
    )
    cfg = GraphConfig.small(epochs=80, patience=80, lr=5e-3)
    n_classes = {"crystal_system": 7, "spacegroup": len(bundled_snapshot.encoders.classes("spacegroup"))}
    metrics = train_graph_baseline(
        {r.material_id: r for r in bundled_snapshot.records}, splits, cfg, n_classes=n_classes
    )
    for name in (
        "cgcnn_test_r2_band_gap",
        "cgcnn_test_r2_energy_above_hull",
        "cgcnn_test_acc_crystal_system",
        "cgcnn_test_acc_spacegroup",
        "cgcnn_val_acc_crystal_system",
        "cgcnn_test_score",
    ):
        assert np.isfinite(metrics[name]), name
    assert 1 <= metrics["cgcnn_epochs_trained"] <= 80 and metrics["cgcnn_train_seconds"] > 0  # its budget
    assert metrics["cgcnn_best_epoch"] < metrics["cgcnn_epochs_trained"] and metrics["cgcnn_layers"] == 2
    majority = df[df.material_id.isin(ids[:12])].drop_duplicates("material_id")["crystal_system_id"].value_counts()
    assert metrics["cgcnn_test_acc_crystal_system"] > majority.max() / 12
    assert metrics["cgcnn_test_r2_band_gap"] > 0.5


def test_missing_record_is_a_config_error(bundled_snapshot):
    ids = sorted(r.material_id for r in bundled_snapshot.records)[:4]
    df = frame(bundled_snapshot, ids)
    splits = Splits(df, df, df.assign(material_id="mp-unknown"), protocol="grouped", seed=0)
    with pytest.raises(ConfigError, match="mp-unknown"):
        train_graph_baseline({r.material_id: r for r in bundled_snapshot.records}, splits, GraphConfig(epochs=1))


def test_the_default_graph_baseline_is_the_published_cgcnn_and_small_is_opt_in():
    """Xie & Grossman 2018 defaults: 3 convolutions on 64 atom features, a 128-wide layer after pooling."""
    from torch_geometric.nn import CGConv

    from crystalvision.core.config import EvaluateConfig
    from crystalvision.evaluate.graphnet import CrystalGraphNet

    assert EvaluateConfig().graph_size == "reference" and GraphConfig() == GraphConfig.sized("reference")
    net = CrystalGraphNet(GraphConfig(), {"crystal_system": 7, "spacegroup": 20})
    convs = [m for m in net.modules() if isinstance(m, CGConv)]
    assert len(convs) == 3 and all(c.channels == 64 for c in convs)
    assert net.embed.embedding_dim == 64 and net.mlp[0].out_features == 128
    small = CrystalGraphNet(GraphConfig.sized("small"), {"crystal_system": 7, "spacegroup": 20})
    assert len([m for m in small.modules() if isinstance(m, CGConv)]) == 2 and small.embed.embedding_dim == 32


def test_each_head_answers_with_its_own_best_validation_epoch(bundled_snapshot):
    """Per-head early stopping keeps one state per head (the epoch of that head's lowest validation loss) and
    predicts each head with it; joint stopping gives every head the same epoch."""
    from crystalvision.evaluate.graphnet import build_graphs, fit_graph_model, predict_graphs, structure_labels

    ids = sorted(r.material_id for r in bundled_snapshot.records if not r.flags)[:14]
    df = frame(bundled_snapshot, ids)
    train, val = df[df.material_id.isin(ids[:10])], df[df.material_id.isin(ids[10:])]
    records = {r.material_id: r for r in bundled_snapshot.records}
    cfg = GraphConfig.small(epochs=12, patience=12, lr=5e-3)
    graphs = build_graphs(records, ids, cfg)
    n_classes = {"crystal_system": 7, "spacegroup": len(bundled_snapshot.encoders.classes("spacegroup"))}
    fit = fit_graph_model(train, val, graphs, n_classes, cfg)
    heads = {"band_gap", "energy_above_hull", "crystal_system", "spacegroup"}
    assert set(fit.states) == heads and fit.best_epoch == max(fit.best_epochs.values())
    for head, epoch in fit.best_epochs.items():  # each head's epoch is where its own validation loss was lowest
        losses = [h[f"val_loss_{head}"] for h in fit.history]
        assert epoch == int(np.argmin(losses)), head
    table = structure_labels(val)
    pred = predict_graphs(fit, table, graphs)
    fit.model.load_state_dict(fit.states["crystal_system"])
    alone = predict_graphs(type(fit)(fit.model, fit.mean, fit.std, 0), table, graphs)  # one state for all heads
    assert np.allclose(pred["crystal_system_proba"], alone["crystal_system_proba"], atol=1e-6)
    joint = fit_graph_model(train, val, graphs, n_classes, GraphConfig.small(epochs=12, patience=12, stopping="joint"))
    assert len(set(joint.best_epochs.values())) == 1


def test_evaluate_graph_lr_sets_the_baselines_learning_rate_and_the_record_names_it() -> None:
    from crystalvision.core import EvaluateConfig
    from crystalvision.evaluate.baselines import described, graph_config
    from crystalvision.evaluate.graphnet import GraphConfig

    default = graph_config(EvaluateConfig(graph_baseline=True))
    assert default.lr == GraphConfig.reference().lr and (default.layers, default.atom_features) == (3, 64)
    chosen = EvaluateConfig(graph_baseline=True, graph_lr=3e-3)
    assert graph_config(chosen).lr == 3e-3 and described(chosen)["cgcnn"]["lr"] == 3e-3

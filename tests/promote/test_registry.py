"""Promotion gate against a real MLflow registry (sqlite in tmp): first, better, worse, tie, other split."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from crystalvision.core.config import PipelineConfig
from crystalvision.data.storage import ObjectStore
from crystalvision.promote import registry
from crystalvision.serve.mlflow_model import log_model
from crystalvision.stages import evaluated_metrics
from tests.support.tiny import tiny_model_dir, toy_splits, use_test_tracking

SPLIT = {"snapshot_sha256": "abc1", "cfg.split.protocol": "grouped", "cfg.split.seed": "0", "cfg.render.image_size": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The toy store, its splits (6 structures, 1 view) and an untrained tiny model folder, made once: every run
    below logs this model (runs read them, none writes them)."""
    folder = tmp_path_factory.mktemp("tiny")
    store = ObjectStore(str(folder / "store"))
    return store, toy_splits(store, n_structures=6, views=1), tiny_model_dir(folder / "model")


@pytest.fixture
def env(cv_home, tiny):
    """A function that logs a run with a tiny pyfunc model, params and the ``val_score`` of its evaluated model (as
    evaluation logs it); returns its run id."""
    use_test_tracking()
    store, splits, model_dir = tiny

    def make_run(score: float | None, params: dict | None = None) -> str:
        with mlflow.start_run() as run:
            mlflow.log_params(params or SPLIT)
            if score is not None:
                mlflow.log_metrics(evaluated_metrics({"val_score": score}))
            log_model(model_dir, splits, store)
        return run.info.run_id

    return make_run


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """One real MLflow server (the platform's embedded mode) for the tests with several processes."""
    from tests.support.procs import free_port, start_embedded_mlflow, stop_group

    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    server = start_embedded_mlflow(folder / "home", port, folder / "mlflow.log")
    yield f"http://127.0.0.1:{port}"
    stop_group(server)


@pytest.fixture
def on_server(cv_home, server_url, monkeypatch):
    """This test talks to :func:`server_url` (MLFLOW_TRACKING_URI, inherited by its subprocesses)."""
    from crystalvision.core.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_url)
    get_settings.cache_clear()
    use_test_tracking()
    yield server_url
    get_settings.cache_clear()


def _aliases(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient().get_registered_model(name).aliases.items()}


def _never_evaluate(*_args):
    raise AssertionError("same split: the champion must not be re-evaluated")


def test_first_better_worse_tie(env) -> None:
    cfg = PipelineConfig(name="t")
    name = cfg.registry.model_name
    first = registry.register_and_promote(cfg, env(0.50), evaluator=_never_evaluate)
    assert first["promoted"] and first["champion_version"] == first["challenger_version"] == "1"
    assert _aliases(name) == {"challenger": "1", "champion": "1"}

    better_id = env(0.60)
    better = registry.register_and_promote(cfg, better_id, evaluator=_never_evaluate)
    assert better["promoted"] and better["same_split"] and better["champion_value"] == pytest.approx(0.5)
    assert _aliases(name) == {"challenger": "2", "champion": "2"}

    worse = registry.register_and_promote(cfg, env(0.40), evaluator=_never_evaluate)
    assert not worse["promoted"] and worse["champion_version"] == "2"
    assert _aliases(name) == {"challenger": "3", "champion": "2"}

    tie = registry.register_and_promote(cfg, env(0.60), evaluator=_never_evaluate)
    assert not tie["promoted"] and "<=" in tie["reason"]
    assert _aliases(name) == {"challenger": "4", "champion": "2"}

    # every decision is recorded on the run and the model version
    client = MlflowClient()
    assert client.get_run(better_id).data.tags[registry.DECISION_TAG] == "promoted"
    assert client.get_model_version(name, "4").tags["promotion_decision"] == "kept_champion"
    path = mlflow.artifacts.download_artifacts(f"runs:/{better_id}/registry/decision-v2.json")
    assert json.loads(Path(path).read_text())["champion_version_before"] == "1"


def test_min_improvement_and_missing_metric(env) -> None:
    cfg = PipelineConfig(name="t", registry={"model_name": "gate", "min_improvement": 0.05})
    registry.register_and_promote(cfg, env(0.50), evaluator=_never_evaluate)
    small = registry.register_and_promote(cfg, env(0.54), evaluator=_never_evaluate)
    assert not small["promoted"]
    unevaluated = registry.register_and_promote(cfg, env(None), evaluator=_never_evaluate)
    assert not unevaluated["promoted"] and "evaluate it first" in unevaluated["reason"]
    assert _aliases("gate")["champion"] == "1"


def test_other_split_reevaluates_the_champion(env) -> None:
    cfg = PipelineConfig(name="t", registry={"model_name": "resplit"})
    registry.register_and_promote(cfg, env(0.90, {**SPLIT, "cfg.split.seed": "1"}))
    calls = []

    def evaluator(cfg_, champion, metric):
        calls.append((str(champion.version), metric))
        return 0.30  # the champion scores worse on the challenger's test split than its logged 0.90

    decision = registry.register_and_promote(cfg, env(0.50), evaluator=evaluator)
    assert calls == [("1", "val_score")]
    assert decision["promoted"] and decision["same_split"] is False
    assert decision["champion_value"] == pytest.approx(0.30) and "re-evaluated" in decision["comparison"]

    def broken(*_args):
        raise ImportError("no evaluate module")

    fallback = registry.register_and_promote(cfg, env(0.55, {**SPLIT, "cfg.split.seed": "7"}), evaluator=broken)
    assert fallback["champion_value"] == pytest.approx(0.50) and fallback["promoted"]
    assert "re-evaluation failed" in fallback["comparison"]


def test_registering_the_same_run_twice_keeps_one_version(env) -> None:
    """A relaunched pipeline (or a retried `register`) registers the run once and returns its recorded decision."""
    cfg = PipelineConfig(name="t", registry={"model_name": "idem"})
    run_id = env(0.50)
    first = registry.register_and_promote(cfg, run_id, evaluator=_never_evaluate)
    again = registry.register_and_promote(cfg, run_id, evaluator=_never_evaluate)
    versions = MlflowClient().search_model_versions("name='idem'")
    assert [str(v.version) for v in versions] == ["1"]
    assert again["challenger_version"] == first["challenger_version"] == "1" and again["already_registered"]
    assert _aliases("idem") == {"challenger": "1", "champion": "1"}


def test_champion_moved_meanwhile_is_not_overwritten(env) -> None:
    """Compare-and-set: another registration moves the champion while this one re-evaluates; this one refuses."""
    cfg = PipelineConfig(name="t", registry={"model_name": "cas"})
    registry.register_and_promote(cfg, env(0.30, {**SPLIT, "cfg.split.seed": "1"}))  # v1 champion
    rival = env(0.40)
    client = MlflowClient()
    rival_version = mlflow.register_model(f"runs:/{rival}/model", "cas").version  # v2, registered meanwhile

    def evaluator(cfg_, champion, metric):
        client.set_registered_model_alias("cas", "champion", rival_version)  # the other registration wins first
        return 0.10

    decision = registry.register_and_promote(cfg, env(0.90), evaluator=evaluator)
    assert not decision["promoted"] and decision["conflict"] and "moved from v1 to v2" in decision["reason"]
    assert _aliases("cas")["champion"] == str(rival_version) and decision["champion_version"] == "2"
    assert client.get_model_version("cas", "3").tags["promotion_decision"] == "kept_champion"


def test_champion_reevaluation_aligns_class_ids_by_name(cv_home, tmp_path) -> None:
    """The new snapshot's space-group list gained a class in front: every id shifted by one. The registered
    champion is scored against its own classes by name, so its metrics do not move; an unseen class is named."""
    import dataclasses

    from crystalvision.core.errors import ModelError
    from crystalvision.learn import Prepared
    from crystalvision.learn.model import load_model

    use_test_tracking()
    store = ObjectStore(str(tmp_path / "store"))
    splits = toy_splits(store, n_structures=10, views=2)
    model_dir = tiny_model_dir(tmp_path / "model")
    with mlflow.start_run() as run:
        log_model(model_dir, splits, store)
    champion = mlflow.register_model(f"runs:/{run.info.run_id}/model", "align")
    cfg = PipelineConfig(name="t", render={"image_size": 32}, evaluate={"saliency": False})
    spec = load_model(model_dir).spec
    metric = "test_auc_micro_spacegroup"
    before = registry.evaluate_champion_on(cfg, champion, metric, Prepared(cfg, store, splits, spec))
    new_classes = ["P2_1/c", *spec.classes("spacegroup")]  # the changed class list of the new snapshot
    renumbered = {p: d.assign(spacegroup_id=d["spacegroup_symbol"].map(new_classes.index)) for p, d in splits.items()}
    shifted = dataclasses.replace(splits, **renumbered)
    assert (shifted.test["spacegroup_id"] != splits.test["spacegroup_id"]).all()
    after = registry.evaluate_champion_on(cfg, champion, metric, Prepared(cfg, store, shifted, spec))
    assert after == pytest.approx(before)
    unseen = dataclasses.replace(shifted, test=shifted.test.assign(spacegroup_symbol="P2_1/c", spacegroup_id=0))
    with pytest.raises(ModelError, match="P2_1/c"):
        registry.evaluate_champion_on(cfg, champion, metric, Prepared(cfg, store, unseen, spec))


def test_evaluation_and_registration_send_heartbeats(env, tmp_path) -> None:
    """Leases are renewed by progress (`tests/learn/test_resume.py::test_a_long_first_epoch_keeps_the_run_lease`): a
    registration that re-evaluates the champion sends a heartbeat at every registry step, every prediction batch and
    leakage block and every evaluation step, so no lease has to outlast a whole evaluation or registration."""
    import math

    from crystalvision.core import progress
    from crystalvision.learn import Prepared
    from crystalvision.learn.model import load_model

    store = ObjectStore(str(tmp_path / "beats-store"))
    splits = toy_splits(store, n_structures=10, views=4)
    spec = load_model(tiny_model_dir(tmp_path / "beats-model")).spec
    evaluate = {"saliency": False, "baselines": False, "leakage": True, "batch_size": 4}
    cfg = PipelineConfig(name="t", registry={"model_name": "beats"}, render={"image_size": 32}, evaluate=evaluate)
    registry.register_and_promote(cfg, env(0.50, {**SPLIT, "cfg.split.seed": "1"}))  # v1, on another split

    def evaluator(cfg_, champion, metric):
        return registry.evaluate_champion_on(cfg_, champion, metric, Prepared(cfg_, store, splits, spec))

    beats: list[tuple[str, str]] = []
    with progress.listening(lambda e: beats.append((e.stage, str(e.info.get("step")))) if e.heartbeat else None):
        decision = registry.register_and_promote(cfg, env(0.60), evaluator=evaluator)
    assert "re-evaluated" in decision["comparison"]
    steps = [step for _, step in beats]
    assert steps.count("predict test") >= math.ceil(len(splits.test) / 4)  # one per batch of 4 (and per chunk)
    assert steps.count("predict val") >= math.ceil(len(splits.val) / 4)
    assert {"register a version", "challenger alias", "champion value", "re-evaluate champion: model", "tables",
            "leakage search", "plots", "report", "decision"} <= set(steps), steps  # fmt: skip


def test_registration_given_the_prepared_data_does_not_prepare_it_again(env, tiny, monkeypatch) -> None:
    """A pipeline registers with the data it trained on in hand: a champion of another split is re-evaluated on that
    data, and the road from the config (snapshot, render, labels table) is not taken a second time."""
    import crystalvision.stages.road as road
    from crystalvision.learn import Prepared
    from crystalvision.learn.model import load_model

    store, splits, model_dir = tiny
    spec = load_model(model_dir).spec
    cfg = PipelineConfig(name="t", registry={"model_name": "held"}, render={"image_size": 32},
                         evaluate={"saliency": False, "baselines": False, "leakage": False})  # fmt: skip
    registry.register_and_promote(cfg, env(0.50, {**SPLIT, "cfg.split.seed": "1"}))  # v1, on another split

    def prepare_again(*_args, **_kwargs):
        raise AssertionError("the data the pipeline holds was prepared again")

    monkeypatch.setattr(road, "prepare", prepare_again)
    decision = registry.register_and_promote(cfg, env(0.60), prepared=Prepared(cfg, store, splits, spec))
    assert decision["comparison"] == "champion re-evaluated (different held-out split)", decision
    assert decision["champion_value"] is not None


def _structure_table(rng, n: int, correct: int, gap_noise: float, split: str = "val", shift: int = 0):
    """Predictions per structure on ``split`` as evaluation logs them: ``correct`` of ``n`` classes right (the
    first ``correct`` structures, after ``shift``)."""
    import numpy as np
    import pandas as pd

    truth = rng.normal(1.5, 1.0, n)
    df = pd.DataFrame({"split": split, "material_id": [f"mp-{split}-{i}" for i in range(n)]})
    df["band_gap"], df["band_gap_pred"] = truth, truth + rng.normal(0, gap_noise, n)
    df["energy_above_hull"], df["energy_above_hull_pred"] = truth / 10, truth / 10 + rng.normal(0, 0.05, n)
    for t in ("crystal_system", "spacegroup"):
        df[t] = "cubic" if t == "crystal_system" else "Fm-3m"
        df[f"{t}_pred"] = np.where((np.arange(n) - shift) % n < correct, df[t], "other")
    return df


def test_per_target_gate_promotes_only_beyond_the_noise(env, tmp_path) -> None:
    """Same split, per-structure predictions logged: a better `val_score` inside the bootstrap noise keeps the
    champion (one more right validation structure of 40); a challenger far better on the *test* rows only is not
    promoted (promotion reads the validation structures); a clear gain on the validation structures promotes."""
    import numpy as np
    import pandas as pd

    cfg = PipelineConfig(name="t", registry={"model_name": "noise"})

    def run_with_table(score: float, val_correct: int, test_correct: int = 20) -> str:
        run_id = env(score)
        path = tmp_path / run_id / "predictions_by_structure.csv"
        path.parent.mkdir()
        rng = np.random.default_rng(0)
        val = _structure_table(rng, 40, val_correct, 0.3)
        test = _structure_table(rng, 40, test_correct, 0.3, split="test")
        pd.concat([test, val]).to_csv(path, index=False)
        MlflowClient().log_artifact(run_id, str(path), "evaluation")
        return run_id

    registry.register_and_promote(cfg, run_with_table(0.50, 20), evaluator=_never_evaluate)
    within = registry.register_and_promote(cfg, run_with_table(0.51, 21), evaluator=_never_evaluate)
    # the mean score alone would have promoted it; the gate decided, and the decision says so in one "promoted"
    assert within["decided_by"] == "gate" and within["promote_metric_verdict"]["would_promote"]
    assert json.dumps(within).count('"promoted"') == 1
    cls = within["gate"]["targets"]["crystal_system"]
    assert not within["promoted"] and cls["verdict"] == "same" and 0 < cls["improvement"] < 2 * cls["noise"]
    assert within["gate"]["targets"]["band_gap"]["verdict"] == "same"  # same predictions: no change
    assert within["gate"]["split"] == "val" and within["gate"]["correction"] == "holm"
    test_only = registry.register_and_promote(cfg, run_with_table(0.50, 20, test_correct=40), evaluator=_never_evaluate)
    assert not test_only["promoted"] and {v["verdict"] for v in test_only["gate"]["targets"].values()} == {"same"}
    clear_id = run_with_table(0.60, 38)
    clear = registry.register_and_promote(cfg, clear_id, evaluator=_never_evaluate)
    assert clear["promoted"] and clear["gate"]["targets"]["spacegroup"]["verdict"] == "better"
    logged = MlflowClient().get_run(clear_id).data.metrics
    assert logged["gate_improvement_spacegroup"] == pytest.approx(0.45) and logged["gate_noise_spacegroup"] > 0
    assert logged["gate_p_better_adjusted_spacegroup"] <= 0.05


def test_holm_correction_changes_a_borderline_decision() -> None:
    """Four heads, one a little better (4 more right of 100 validation structures: one-sided bootstrap p about
    0.017): alone it passes alpha 0.05, but Holm over four heads needs p <= 0.0125, so it is not promoted."""
    import numpy as np

    from crystalvision.promote import gate

    rng = np.random.default_rng(0)
    champion = _structure_table(rng, 100, 50, 0.3)
    challenger = champion.copy()
    challenger["crystal_system_pred"] = np.where(np.arange(100) < 54, challenger["crystal_system"], "other")
    plain = gate.per_target_gate(challenger, champion, n_boot=4000, correction="none")
    holm = gate.per_target_gate(challenger, champion, n_boot=4000, correction="holm")
    p = plain["targets"]["crystal_system"]["p_better"]
    assert 0.0125 < p < 0.05
    assert plain["promote"] and plain["targets"]["crystal_system"]["verdict"] == "better"
    assert not holm["promote"] and holm["targets"]["crystal_system"]["verdict"] == "same"
    assert holm["targets"]["crystal_system"]["p_better_adjusted"] == pytest.approx(min(1.0, 4 * p))
    assert gate.adjust({"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")}) == pytest.approx(
        {"a": 0.03, "b": 0.06, "c": 0.06, "d": float("nan")}, nan_ok=True
    )


def test_promotion_on_a_test_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="promote_metric 'test_score'.*val_score"):
        PipelineConfig(name="t", registry={"promote_metric": "test_score"})
    assert PipelineConfig(name="t").registry.promote_metric == "val_score"


@pytest.mark.parametrize("metric", ["val_loss", "val_mse_band_gap", "val_ce_spacegroup", "val_struct_mae_band_gap",
                                    "val_n", "select_score"])  # fmt: skip
def test_promotion_on_a_lower_is_better_metric_is_refused(metric: str) -> None:
    """Promotion keeps the higher value: a loss, an error or a count (or a training metric) is a config error naming
    the key and the fix."""
    with pytest.raises(ValueError, match=f"registry.promote_metric '{metric}'.*use val_score"):
        PipelineConfig(name="t", registry={"promote_metric": metric})
    for fine in ("val_score", "val_r2_band_gap", "val_struct_acc_spacegroup", "val_macro_f1_crystal_system"):
        assert PipelineConfig(name="t", registry={"promote_metric": fine}).registry.promote_metric == fine


_RACER = """
import json, sys, time
from pathlib import Path
from mlflow import MlflowClient
from crystalvision.promote import gate, registry
from crystalvision.core.config import PipelineConfig

folder, me, shared, own, delay = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])


def barrier(phase):
    (folder / f"{phase}.{me}").touch()
    deadline = time.time() + 120
    while len(list(folder.glob(f"{phase}.*"))) < 2:
        assert time.time() < deadline, phase
        time.sleep(0.05)


search = MlflowClient.search_model_versions
def search_then_wait(self, *args, **kwargs):  # both looked for the shared run's version before either registers
    found = search(self, *args, **kwargs)
    if shared in str(args) + str(kwargs) and not (folder / f"searched.{me}").exists():
        barrier("searched")
    return found
MlflowClient.search_model_versions = search_then_wait

set_alias = MlflowClient.set_registered_model_alias
def slow_champion_write(self, name, alias, version):  # the two champion writes land one after the other
    if alias == "champion":
        time.sleep(delay)
    return set_alias(self, name, alias, version)
MlflowClient.set_registered_model_alias = slow_champion_write

def evaluator(cfg, champion, metric):  # both read champion v1 and decide before either moves it
    barrier("decided")
    return 0.5

cfg = PipelineConfig(name="t", registry={"model_name": "race"})
out = [registry.register_and_promote(cfg, run, evaluator=evaluator) for run in (shared, own)]
print("DECISIONS " + json.dumps(out, default=str), flush=True)
"""


def test_two_processes_registering_at_once_against_a_server(on_server, env, tmp_path) -> None:
    """Two real processes against a real MLflow server: the same run registered by both at once keeps one version,
    and of two better challengers decided against champion v1 at the same time only one is promoted; the other is
    refused (it was never compared with the first), and the champion is the one that reported "promoted"."""
    import os
    import subprocess
    import sys

    from crystalvision.promote.registry_cas import LOCK_SUFFIX

    procs: list[subprocess.Popen] = []
    try:
        cfg = PipelineConfig(name="t", registry={"model_name": "race"})
        assert registry.register_and_promote(cfg, env(0.50), evaluator=_never_evaluate)["promoted"]  # v1
        shared = env(0.30)  # same split, worse: both processes register it at once
        other = {**SPLIT, "cfg.split.seed": "1"}  # another split: the champion is re-evaluated (0.5)
        own = {"a": env(0.90, other), "b": env(0.80, other)}
        (tmp_path / "barrier").mkdir()
        for me, delay in (("a", "1"), ("b", "3")):
            args = [str(tmp_path / "barrier"), me, shared, own[me], delay]
            procs.append(subprocess.Popen([sys.executable, "-c", _RACER, *args], env=dict(os.environ),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
        decisions = [json.loads(o.split("DECISIONS ", 1)[1])[1] for o in outs]

        client = MlflowClient()
        assert len(client.search_model_versions(f"name='race' and run_id='{shared}'")) == 1
        promoted = [d for d in decisions if d["promoted"]]
        assert len(promoted) == 1, decisions
        refused = next(d for d in decisions if not d["promoted"])
        assert refused["conflict"] and "moved from v1" in refused["reason"]
        assert _aliases("race")["champion"] == promoted[0]["challenger_version"]
        assert not client.search_registered_models(f"name='race{LOCK_SUFFIX}'"), "the lock is released"
    finally:
        for p in procs:
            p.kill()


_LOCK_RACER = """
import json, sys, time
from pathlib import Path
from mlflow import MlflowClient
from crystalvision.promote import registry_cas

folder, me, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
other = {"first": "late", "late": "first"}[me]
lock = name + registry_cas.LOCK_SUFFIX
client = MlflowClient()


def flag(n):
    (folder / n).touch()


def wait_for(n):
    deadline = time.time() + 120
    while not (folder / n).exists():
        assert time.time() < deadline, n
        time.sleep(0.05)


def holder():
    try:
        return (client.get_registered_model(lock).tags or {}).get("holder")
    except Exception:
        return None


# Both find the lock expired; "late" acts on it (delete, rename) only once "first" holds the lock it took over.
for method in ("delete_registered_model", "rename_registered_model"):
    real = getattr(MlflowClient, method)
    def acting(self, n, *args, _real=real, **kwargs):
        if n != lock or (folder / "acted").exists():
            return _real(self, n, *args, **kwargs)
        if me == "late":
            flag("late.decided")
            wait_for("inside.first")
            try:
                return _real(self, n, *args, **kwargs)
            finally:
                flag("acted")
        wait_for("late.decided")
        return _real(self, n, *args, **kwargs)
    setattr(MlflowClient, method, acting)

with registry_cas.promotion_lock(client, name, wait_s=120):
    mine = holder()
    flag(f"inside.{me}")
    if me == "first":
        wait_for("acted")
        time.sleep(2)  # time for "late" to get in, if it (wrongly) could
    overlap = (folder / f"inside.{other}").exists() and not (folder / f"left.{other}").exists()
    still = holder()
    flag(f"left.{me}")
print("RESULT " + json.dumps({"overlap": overlap, "mine": mine, "still": still}), flush=True)
"""


def test_two_processes_taking_over_an_expired_lock(on_server, tmp_path) -> None:
    """Two real processes find the promotion lock of a dead holder expired at once. Takeover is compare-and-delete:
    exactly one of them holds the lock at a time, and neither removes the lock the other has just taken."""
    import os
    import subprocess
    import sys
    import time

    from crystalvision.promote.registry_cas import LOCK_SUFFIX

    procs: list[subprocess.Popen] = []
    try:
        lock = f"expired{LOCK_SUFFIX}"
        dead = {"holder": "gone-node:1:dead", "expires_at": f"{time.time() - 5:.3f}"}
        MlflowClient().create_registered_model(lock, tags=dead)
        (tmp_path / "flags").mkdir()
        for me in ("first", "late"):
            procs.append(subprocess.Popen([sys.executable, "-c", _LOCK_RACER, str(tmp_path / "flags"), me, "expired"],
                                          env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))  # fmt: skip
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
        results = [json.loads(o.split("RESULT ", 1)[1]) for o in outs]
        assert not any(r["overlap"] for r in results), results  # one holder at a time
        for r in results:  # nobody deleted or replaced the lock while its holder was inside
            assert r["mine"] and r["mine"] != dead["holder"] and r["still"] == r["mine"], results
        assert results[0]["mine"] != results[1]["mine"]
        assert not MlflowClient().search_registered_models(f"name='{lock}'"), "the lock is released"
    finally:
        for p in procs:
            p.kill()


def test_a_lock_renamed_away_while_created_is_contention_not_an_error(on_server) -> None:
    """Against a server, a create of the lock that races a takeover (the name taken, then renamed away before the
    server reads it back) answers RESOURCE_DOES_NOT_EXIST: the racer looks again and takes the lock."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from crystalvision.promote.registry_cas import LOCK_SUFFIX, promotion_lock

    client = MlflowClient()
    create, calls = client.create_registered_model, []

    def racing_create(name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 1:  # what the server answers when the rename lands between its insert and its read-back
            raise MlflowException(f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST)
        return create(name, *args, **kwargs)

    client.create_registered_model = racing_create
    with promotion_lock(client, "raced", wait_s=30) as held:
        assert held.name == f"raced{LOCK_SUFFIX}" and len(calls) == 2
        assert MlflowClient().get_registered_model(held.name).tags["holder"] == held.holder


def test_a_tag_written_by_two_processes_at_once_is_written_again_not_lost(cv_home) -> None:
    """MLflow's SQL store upserts a tag by a look-up, then an insert: a second writer that looked before the first
    inserted gets a unique-key error (seen between two registrations of one run against a server). The write is
    tried again and updates the tag; any other error is raised at once."""
    from mlflow.exceptions import MlflowException

    from crystalvision.promote.registry_cas import set_tag_racing

    use_test_tracking()
    client = MlflowClient()
    with mlflow.start_run() as run:
        pass
    run_id, calls = run.info.run_id, []

    def set_tag(run: str, key: str, value: str) -> None:  # the other process inserts between look-up and insert
        calls.append(1)
        if len(calls) == 1:
            client.set_tag(run, key, "theirs")
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key, tags.run_uuid")
        client.set_tag(run, key, value)

    set_tag_racing(set_tag, run_id, "decision", "mine")
    assert len(calls) == 2 and client.get_run(run_id).data.tags["decision"] == "mine"

    def gone(run: str, key: str, value: str) -> None:
        calls.append(1)
        raise MlflowException(f"Run '{run}' not found", error_code="RESOURCE_DOES_NOT_EXIST")

    calls.clear()
    with pytest.raises(MlflowException, match="not found"):
        set_tag_racing(gone, "x", "decision", "mine")
    assert len(calls) == 1, "an error that is not a concurrent insert is not retried"

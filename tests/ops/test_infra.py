"""Every manifest under infra/ and jobs/ parses, and every command, module and file it names exists here."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted([*ROOT.glob("infra/**/*.yaml"), *ROOT.glob("jobs/**/*.yaml")])
REPO_PATH = re.compile(r"^(pipelines|jobs|mlflow|infra|platform|tests|docs)/[\w./-]*[\w]$")
IMAGE_ROOT = "/app/"  # the Dockerfile's WORKDIR: paths under it are repo paths
THIRD_PARTY_MODULES = {"mlflow", "ray", "pip"}
STAGE_JOBS = ("snapshot", "ingest", "render", "train", "evaluate", "register", "tune", "pipeline", "watch")


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _commands(node: object) -> Iterator[list[str]]:
    """Container ``command + args`` lists and RayJob ``entrypoint`` strings, as argv lists."""
    if isinstance(node, dict):
        if isinstance(node.get("command"), list):
            yield [*node["command"], *node.get("args", [])]
        if isinstance(node.get("entrypoint"), str):
            yield shlex.split(node["entrypoint"])
        for v in node.values():
            yield from _commands(v)
    elif isinstance(node, list):
        for v in node:
            yield from _commands(v)


def _tokens(text: str) -> Iterator[str]:
    for token in re.split(r"[\s,\"'\[\]{}=]+", text):
        token = token.removeprefix(IMAGE_ROOT).rstrip(":")
        if token:
            yield token


def _cli_commands() -> set[str]:
    import typer.main

    from crystalvision.app.cli import app

    group = typer.main.get_command(app)
    return set(group.commands)  # type: ignore[attr-defined]


def _check_argv(argv: list[str], where: str) -> None:
    exe = Path(argv[0]).name
    if exe in ("python", "python3") and len(argv) > 2 and argv[1] == "-m":
        module = argv[2]
        if module.split(".")[0] not in THIRD_PARTY_MODULES:
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{where}: module {module} not in repo"
    elif exe in ("python", "python3"):
        assert (ROOT / argv[1].removeprefix(IMAGE_ROOT)).is_file(), f"{where}: script {argv[1]} not in repo"
    elif exe == "crystalvision":
        assert argv[1] in _cli_commands(), f"{where}: `crystalvision {argv[1]}` is not a CLI command"
    else:
        assert exe in {"ray", "mlflow", "bash", "sh"}, f"{where}: unknown executable {exe}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_references_exist(path: Path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    text = path.read_text()
    for token in _tokens(text):
        if REPO_PATH.match(token) and not any(ch in token for ch in "*?"):
            assert (ROOT / token).exists(), f"{path.name} names {token}, which is not in the repo"
    for doc in docs:
        for argv in _commands(doc):
            _check_argv(argv, path.name)
        for s in _strings(doc):
            if "\n" in s and ":" in s:  # embedded YAML (RayJob runtimeEnvYAML) must parse too
                assert isinstance(yaml.safe_load(s), dict), f"{path.name}: embedded YAML does not parse"


def test_kubernetes_kinds_and_gpu_group():
    kinds = {}
    for path in ROOT.glob("infra/k8s/*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            kinds.setdefault(doc["kind"], []).append(doc)
    assert {"RayCluster", "RayJob", "CronJob", "Deployment", "Service"} <= set(kinds)
    groups = {g["groupName"]: g for g in kinds["RayCluster"][0]["spec"]["workerGroupSpecs"]}
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1" and "nvidia.com/gpu" not in str(groups["cpu"])
    cron = kinds["CronJob"][0]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_every_stage_job_has_an_entrypoint_and_a_runtime_env():
    for stage in STAGE_JOBS:
        assert (ROOT / "jobs" / f"{stage}.py").is_file(), stage
        env = yaml.safe_load((ROOT / "jobs" / "runtime_env" / f"{stage}.yaml").read_text())
        assert all((ROOT / m).is_dir() for m in env["py_modules"]), stage
        assert ".venv" in env["excludes"]


def test_dockerfile_copies_existing_paths_and_installs_render_deps():
    text = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    for line in text.splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
    assert all(pkg in text for pkg in ("libegl1", "libgl1-mesa-dri", 'pip install ".[server]"'))


def _k8s_docs() -> list[dict]:
    return [d for p in sorted(ROOT.glob("infra/k8s/*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _containers(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield from node["containers"]
        for v in node.values():
            yield from _containers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _containers(v)


def _secret_names(container: dict) -> set[str]:
    names = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e}
    return names


def test_ray_pods_and_submitters_use_token_auth_and_only_their_secrets():
    docs = {d["kind"]: d for d in _k8s_docs() if d["kind"] in ("RayCluster", "RayJob", "CronJob")}
    docs["NetworkPolicy"] = _policy("crystalvision-ray")
    cluster = docs["RayCluster"]
    ray_containers = {"head": next(_containers(cluster["spec"]["headGroupSpec"]))}
    for group in cluster["spec"]["workerGroupSpecs"]:
        ray_containers[group["groupName"]] = next(_containers(group))
    submitters = {"rayjob": next(_containers(docs["RayJob"])), "cron": next(_containers(docs["CronJob"]))}
    for name, c in {**ray_containers, **submitters}.items():
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "crystalvision-ray-token",
            "key": "auth_token",
        }, name
    # The MP key only where ingest runs (job drivers on the head, the watch CronJob); no Ray pod gets the MLflow
    # server's own secrets.
    assert "crystalvision-mp" in _secret_names(ray_containers["head"])
    assert all("crystalvision-mp" not in _secret_names(ray_containers[g]) for g in ("cpu", "gpu"))
    assert all("mlflow-secrets" not in _secret_names(c) for c in ray_containers.values())
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"ray.io/cluster": "crystalvision"}
    client_rule = next(r for r in policy["ingress"] if "ports" in r)
    assert {p["port"] for p in client_rule["ports"]} == {8265, 10001}
    for kind in ("RayJob", "CronJob"):
        labels = [n for n in _walk_labels(docs[kind])]
        assert any(_admits(docs["NetworkPolicy"], x, 8265) for x in labels), kind


def _walk_labels(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict) and "labels" in node["metadata"]:
            yield node["metadata"]["labels"]
        for v in node.values():
            yield from _walk_labels(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_labels(v)


def _policy(name: str) -> dict:
    return next(d for d in _k8s_docs() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)


def _admits(policy: dict, labels: dict[str, str], port: int) -> bool:
    """Whether an Ingress NetworkPolicy lets a pod of this namespace with ``labels`` reach ``port``."""
    for rule in policy["spec"].get("ingress", []):
        peers = rule.get("from")
        ok_peer = peers is None or any(
            "podSelector" in peer and peer["podSelector"].get("matchLabels", {}).items() <= labels.items()
            for peer in peers
        )
        ports = rule.get("ports")
        if ok_peer and (ports is None or any(p["port"] == port for p in ports)):
            return True
    return False


def test_only_ray_pods_and_the_watch_cronjob_reach_mlflow():
    docs = {d["kind"]: d for d in _k8s_docs() if d["kind"] in ("Deployment", "RayJob", "CronJob")}
    policy = _policy("mlflow")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    mlflow_pod = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= mlflow_pod.items(), "it selects the MLflow pods"
    ray_pod = {"ray.io/cluster": "crystalvision", "ray.io/node-type": "worker"}  # labels KubeRay puts on Ray pods
    cron_pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    submitter = docs["RayJob"]["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert _admits(policy, ray_pod, 5000) and _admits(policy, cron_pod, 5000)
    assert not _admits(policy, submitter, 5000), "the RayJob submitter never talks to MLflow"
    assert not _admits(policy, {}, 5000) and not _admits(policy, {"app": "other"}, 5000)
    assert not _admits(policy, ray_pod, 22), "only the MLflow port"


def _pod_specs() -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod the manifests run: any mapping that holds ``containers``."""

    def walk(node: object, where: str) -> Iterator[tuple[str, dict]]:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                yield where, node
            for k, v in node.items():
                yield from walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{where}[{i}]")

    for doc in _k8s_docs():
        yield from walk(doc, f"{doc['kind']}/{doc['metadata']['name']}")


def test_every_pod_runs_non_root_without_privileges_on_a_read_only_root():
    pods = dict(_pod_specs())
    assert len(pods) == 6, sorted(pods)  # mlflow, Ray head, cpu and gpu workers, watch CronJob, RayJob submitter
    for where, pod in pods.items():
        ctx = pod.get("securityContext", {})
        assert ctx.get("runAsNonRoot") is True and ctx.get("runAsUser", 0) != 0, where
        assert ctx.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"])
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (where, c["name"])
            assert sc.get("readOnlyRootFilesystem") is True, (where, c["name"])
            writable = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in empty_dirs}
            assert {"/tmp", "/home/ray"} <= writable, (where, c["name"], "needs writable /tmp and HOME")
    cluster = next(d for d in _k8s_docs() if d["kind"] == "RayCluster")
    autoscaler = cluster["spec"]["autoscalerOptions"]["securityContext"]
    assert autoscaler["allowPrivilegeEscalation"] is False and autoscaler["capabilities"]["drop"] == ["ALL"]
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    assert "USER 1000" in dockerfile and "--uid 1000 ray" in dockerfile, "the image's user is the pods' uid"


def test_every_secret_the_manifests_use_is_documented():
    readme = (ROOT / "README.md").read_text()
    used = {n for d in _k8s_docs() for c in _containers(d) for n in _secret_names(c)}
    assert used and all(f"`{name}`" in readme for name in used), used


_AUTH_PROBE = """
import json, sys, requests, ray
from crystalvision.ops.raycluster import ensure_ray
ensure_ray(include_dashboard=True)
from ray._raylet import AuthenticationMode, get_authentication_mode
url = ray._private.worker._global_node.webui_url
anonymous = requests.get(f"http://{url}/api/jobs/", timeout=30).status_code
print(json.dumps({"token": get_authentication_mode() == AuthenticationMode.TOKEN, "anonymous": anonymous,
                  "task": ray.get(ray.remote(lambda: 1).remote())}))
ray.shutdown()
"""


def test_local_cluster_keeps_ray_token_auth_on(tmp_path: Path):
    """The library never turns Ray's token auth off: a local cluster demands the token (tests turn it off)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), CRYSTALVISION_HOME=str(tmp_path / "cv"), RAY_USAGE_STATS_ENABLED="0")
    out = subprocess.run([sys.executable, "-c", _AUTH_PROBE], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"token": True, "anonymous": 401, "task": 1}, result
    assert (tmp_path / ".ray" / "auth_token").is_file()


def test_the_image_holds_every_file_a_shipped_pipeline_names():
    """A pipeline file's paths resolve against its folder (/app/pipelines in the image): what they name is copied."""
    from crystalvision.core.pipeline_file import PATH_KEYS, load_pipeline

    text = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    copied = [Path(src) for line in text.splitlines() if line.startswith("COPY") for src in line.split()[1:-1]]
    for path in sorted(ROOT.glob("pipelines/*.yaml")):
        cfg = load_pipeline(path).model_dump()
        for *sections, key in PATH_KEYS:  # split.holdout.ids: three levels, the section may be None
            node = cfg
            for section in sections:
                node = node.get(section) or {}
            value = node.get(key)
            if value and "://" not in value:
                named = Path(value).relative_to(ROOT)
                assert any(named.is_relative_to(src) for src in copied), f"{path.name} names {named}, not in the image"

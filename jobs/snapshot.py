"""Job: load and verify a snapshot on every node of the cluster and report its manifest.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/snapshot.yaml \
        -- python -m jobs.snapshot
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import log, parser, run


def verify_here(uri: str | None) -> dict[str, Any]:
    """Load ``uri`` (default: the configured snapshot) and check its content hash; runs in a Ray task."""
    import ray

    from crystalvision.core.settings import get_settings
    from crystalvision.data.snapshot import load_snapshot

    snap = load_snapshot(uri or get_settings().data.snapshot_uri)
    return {"node_id": ray.get_runtime_context().get_node_id(), "sha256": snap.manifest.content_sha256}


def main(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from crystalvision.core.settings import get_settings
    from crystalvision.data.snapshot import load_snapshot
    from crystalvision.ops.raycluster import ensure_ray

    ensure_ray()
    snap = load_snapshot(args.uri or get_settings().data.snapshot_uri)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    task = ray.remote(num_cpus=args.task_cpus, scheduling_strategy="SPREAD")(verify_here)
    checks = ray.get([task.remote(args.uri) for _ in nodes])
    if any(c["sha256"] != snap.manifest.content_sha256 for c in checks):
        raise RuntimeError(f"snapshot differs between nodes: {checks}")
    log.info("snapshot %s verified on %d nodes", snap.manifest.snapshot_id, len({c["node_id"] for c in checks}))
    return {"manifest": snap.manifest.model_dump(), "verified_on_nodes": sorted({c["node_id"] for c in checks})}


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--uri", default=None, help="Snapshot folder (default: the configured/bundled one).")
    p.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per verification task (spreads them).")
    return p


if __name__ == "__main__":
    run(main, build_parser())

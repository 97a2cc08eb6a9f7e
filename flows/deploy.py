"""Deploy to the edge, by hand: resolve alias `edge`, build and sign its bundle, push it to every
node of a nodes file, and check that each node's /readyz reports the new version; or start an
online experiment with it as the treatment instead of swapping it in (`experiment=`).

A node verifies the bundle, warms it and only then swaps, so a node that fails (refuses the
bundle, is unreachable, answers with the wrong version) keeps serving its previous bundle; the
report says which nodes were updated and why the others were not. `rollback_flow` returns nodes
to the bundle they served before.

Nodes file (TOML):

    [[nodes]]
    name = "store-0042"
    url = "http://10.0.0.5:8000"
    token_env = "STORE_0042_TOKEN"   # or: token = "…" (the node's /admin bearer token)
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from lightpersml import config

config.apply_environment()  # before prefect and mlflow load: they read it on import

from prefect import flow
from prefect.artifacts import create_table_artifact

from edge.bundle import PRIVATE_KEY, archive_bundle
from edge.experiment import new_salt
from nodes.experiments import ExperimentUpdate
from nodes.fleet import NodeUpdate, read_nodes
from tasks.bundle import bundle_task
from tasks.experiments import start_experiment_task
from tasks.nodes import push_task, rollback_task
from tasks.register import model_for_task


def _report(rows: list[NodeUpdate], key: str, title: str) -> list[NodeUpdate]:
    create_table_artifact(key=key, table=[asdict(row) for row in rows], description=title)
    for row in rows:
        print(f"{row.node}: {row.status} ({row.version_before} → {row.version_after}) {row.detail}")
    return rows


@flow(name="deploy-to-edge", log_prints=True)
def deploy_flow(
    nodes_file: str,
    dataset: str | None = None,
    alias: str = "edge",
    key: str | None = None,
    experiment: str | None = None,
    treatment_share: float = 0.5,
    window_hours: float = 24.0,
) -> list[NodeUpdate] | list[ExperimentUpdate]:
    """Bundle the version of `dataset`'s registered model (default: the only dataset's) behind
    `alias` and push it to every node; one report row per node. With `experiment`, the bundle is
    not swapped in: it becomes the treatment of experiment `experiment` against what each node
    serves, for `treatment_share` of shoppers (one salt on every node)."""
    nodes = read_nodes(Path(nodes_file))
    name = model_for_task(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = bundle_task(Path(tmp) / "bundle", Path(key) if key else config.keys_dir() / PRIVATE_KEY, name, alias)
        archive = archive_bundle(Path(tmp) / "bundle")
    version = str(manifest["model_version"])
    title = f"{manifest['registered_model']} version {version} ({manifest['tier']})"
    if experiment is not None:
        salt = new_salt()
        futures = [
            start_experiment_task.submit(node, archive, experiment, treatment_share, window_hours, salt)
            for node in nodes
        ]
        rows = [f.result() for f in futures]
        create_table_artifact(
            key="edge-experiment", table=[asdict(r) for r in rows], description=f"Experiment {experiment}: {title}"
        )
        for row in rows:
            print(f"{row.node}: {row.status} {row.experiment or ''} {row.detail}")
        return rows
    futures = [push_task.submit(node, archive, version) for node in nodes]
    return _report([f.result() for f in futures], "edge-deploy", f"Deploy of {title}")


@flow(name="rollback-edge", log_prints=True)
def rollback_flow(nodes_file: str) -> list[NodeUpdate]:
    """Every node serves its previous bundle again; one report row per node."""
    futures = [rollback_task.submit(node) for node in read_nodes(Path(nodes_file))]
    return _report([f.result() for f in futures], "edge-rollback", "Rollback of the edge nodes")

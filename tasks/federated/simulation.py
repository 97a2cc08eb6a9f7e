"""Federated training step: run the Flower app (tasks/federated) in Flower's simulation engine,
one virtual node per store group, and read back the final model and its per-round record."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.ranker import CandidateRanker


@dataclass
class FederatedResult:
    model: CandidateRanker
    summary: dict  # the server's JSON: rounds (NDCG, ε, δ, bytes per node), epsilon, delta, settings, …
    seconds: float


def run_federated(settings: dict, n_nodes: int, output: Path, client_app=None) -> FederatedResult:
    """Train with `settings` (keys of tasks.federated.task.DEFAULTS) on `n_nodes` simulated nodes.

    `client_app` replaces the honest nodes' app (the benchmarks' attackers). The model and the
    server's summary are saved to `output` and `output`.json.
    """
    from flwr.simulation import run_simulation

    from tasks.federated.client_app import make_client_app
    from tasks.federated.server_app import make_server_app
    from tasks.federated.task import node_data, server_data

    start = time.perf_counter()
    # Build the nodes' and the server's cached lists here, once, rather than in racing Ray actors.
    node_data(settings["data"], n_nodes, 0, int(settings["local-weeks"]), settings["split"])
    server_data(settings["data"])
    output.unlink(missing_ok=True)
    run_simulation(make_server_app(settings, output), client_app or make_client_app(settings), num_supernodes=n_nodes,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": os.cpu_count(), "include_dashboard": False}})
    if not output.exists():  # run_simulation logs the server's exception instead of raising it
        raise RuntimeError(f"federated training saved no model to {output}: see the Flower log above")
    return FederatedResult(CandidateRanker.load(output), json.loads(output.with_suffix(".json").read_text()), time.perf_counter() - start)


@task(name="federated training", cache_policy=NO_CACHE, task_run_name="federated training: {n_nodes} nodes")
def federate_task(settings: dict, n_nodes: int, output: Path) -> FederatedResult:
    return run_federated(settings, n_nodes, output)

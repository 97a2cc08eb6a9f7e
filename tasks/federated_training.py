"""Prefect tasks over `federated.simulation` (the logic lives there)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from federated.simulation import FederatedResult, train_federated
from federated.task import FederatedSettings


@task(name="federated training", cache_policy=NO_CACHE, task_run_name="federated training: {n_nodes} nodes")
def federate_task(settings: FederatedSettings, n_nodes: int, output: Path, target_epsilon: float) -> FederatedResult:
    return train_federated(settings, n_nodes, output, target_epsilon)

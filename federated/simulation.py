"""Federated training step: run the Flower app (federated/) in Flower's simulation engine,
one virtual node per store group, and read back the final model and its per-round record."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from federated.summary import FederatedSummary
from federated.task import FederatedSettings, node_data, server_data
from models.ranker import CandidateRanker


@dataclass
class FederatedResult:
    model: CandidateRanker
    summary: FederatedSummary  # the server's record: rounds (NDCG, ε, δ, bytes per node), ε, δ, settings
    seconds: float  # wall time of the whole simulation


def run_federated(settings: FederatedSettings, n_nodes: int, output: Path, client_app=None) -> FederatedResult:
    """Train with `settings` on `n_nodes` simulated nodes.

    `client_app` replaces the honest nodes' app (the benchmarks' attackers). The model and the
    server's summary are saved to `output` and `output`.json.
    """
    from flwr.simulation import run_simulation

    from federated.client_app import make_client_app
    from federated.server_app import make_server_app

    start = time.perf_counter()
    # Build the nodes' and the server's cached lists here, once, rather than in racing Ray actors.
    node_data(settings.data, n_nodes, 0, settings.local_weeks, settings.split)
    server_data(settings.data)
    output.unlink(missing_ok=True)
    run_simulation(
        make_server_app(settings, output),
        client_app or make_client_app(settings),
        num_supernodes=n_nodes,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {"num_cpus": os.cpu_count(), "include_dashboard": False},
        },
    )
    if not output.exists():  # run_simulation logs the server's exception instead of raising it
        raise RuntimeError(f"federated training saved no model to {output}: see the Flower log above")
    summary = FederatedSummary.from_dict(json.loads(output.with_suffix(".json").read_text()))
    return FederatedResult(CandidateRanker.load(output), summary, time.perf_counter() - start)


def check_budget(summary: FederatedSummary, target_epsilon: float) -> None:
    """A private run whose first round alone passes the target must not be released."""
    if summary.private and summary.epsilon > target_epsilon:
        raise ValueError(
            f"one federated round costs ε = {summary.epsilon:.2f}, past the target {target_epsilon:g}: "
            "raise --noise-multiplier or the target; nothing was registered"
        )


def train_federated(settings: FederatedSettings, n_nodes: int, output: Path, target_epsilon: float) -> FederatedResult:
    """`run_federated`, refused (ValueError) when its privacy budget passes `target_epsilon`."""
    result = run_federated(settings, n_nodes, output)
    check_budget(result.summary, target_epsilon)
    return result

"""Flower's simulation engine: two store-group nodes train the edge-sized ranker on their own
data; the server aggregates and scores each round's global model on the central validation lists."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow


def test_two_nodes_train_a_round_that_beats_the_initial_model_on_central_validation(cj_slice, tmp_path):
    from flwr.simulation import run_simulation

    from tasks.federated.client_app import make_client_app
    from tasks.federated.server_app import make_server_app

    overrides = {"data": str(cj_slice), "num-server-rounds": 1, "local-weeks": 2, "aggregation": "fedavg"}
    output = tmp_path / "federated.pt"
    run_simulation(make_server_app(overrides, output), make_client_app(overrides), num_supernodes=2,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    saved = torch.load(output, weights_only=True)
    assert saved["config"]["item_buckets"] == 8192  # the edge tier's size
    rounds = json.loads(output.with_suffix(".json").read_text())  # round 0: the random initial model
    assert rounds["1"]["validation_ndcg_at_10"] > rounds["0"]["validation_ndcg_at_10"] + 0.05

"""Flower's simulation engine: two store-group nodes train the edge-sized ranker on their own
data; the server aggregates and scores each round's global model on the central validation lists."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from lightpersml import config

pytestmark = pytest.mark.slow
TARGET_EPSILON = "10"  # on the slice (2 nodes), ε after rounds 1, 2, 3 is 6.0, 9.2, 12.0 (measured)


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
    rounds = json.loads(output.with_suffix(".json").read_text())["rounds"]  # round 0: the random initial model
    assert rounds["1"]["validation_ndcg_at_10"] > rounds["0"]["validation_ndcg_at_10"] + 0.05


def test_federate_command_trains_privately_logs_the_tier_and_registers_it(prefect_api, cj_slice):
    """`lightpersml federate` on the slice: DP-SGD rounds until the ε target, the federated tier
    logged with every tier metric plus ε and δ, per-round ε in the parent run, a registered version."""
    import re

    import mlflow
    from typer.testing import CliRunner

    from lightpersml.cli import app
    from tasks.track import TIER_METRICS

    result = CliRunner().invoke(app, ["federate", "--data", str(cj_slice), "--nodes", "2", "--rounds", "3",
                                      "--noise-multiplier", "1.0", "--target-epsilon", TARGET_EPSILON,
                                      "--aggregation", "fedtrimmedavg"])
    assert result.exit_code == 0, result.output
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", result.output).group(1)
    version = re.search(r"registered as version (\d+)", result.output).group(1)
    client = mlflow.MlflowClient()
    epsilons = client.get_metric_history(run_id, "test_round_epsilon")
    assert [m.step for m in epsilons] == [1, 2], [m.value for m in epsilons]  # a third round would pass the target
    assert epsilons[0].value < epsilons[1].value <= float(TARGET_EPSILON)
    delta = client.get_metric_history(run_id, "test_round_delta")[-1].value
    assert delta == pytest.approx(1 / len(pd.read_parquet(cj_slice / "users.parquet")))
    sent = client.get_metric_history(run_id, "test_round_bytes_per_node")[-1].value
    weights = 4 * 109_313 + 4 * 2 * 33  # the edge model's float32 weights and standardisation buffers
    assert weights <= sent < weights + 2_000  # plus one .npy header per array
    tier_run = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{run_id}'", output_format="list",
                                  search_all_experiments=True)
    assert [r.data.tags["tier"] for r in tier_run] == ["federated"]
    assert set(TIER_METRICS) | {"epsilon", "delta"} <= set(tier_run[0].data.metrics)
    registered = client.get_model_version(config.REGISTERED_MODEL, version)
    assert registered.tags["tier"] == "federated" and float(registered.tags["deploy_fit_epsilon"]) <= float(TARGET_EPSILON)

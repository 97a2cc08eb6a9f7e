"""`lightpersml federate` on the slice, in Flower's simulation engine: two store-group nodes train
the edge-sized ranker with DP-SGD on their own data; the server aggregates, accounts ε and scores
each round's global model on the central validation lists."""

from __future__ import annotations

import pandas as pd
import pytest
from opacus.accountants import RDPAccountant

from lightpersml import config

pytestmark = pytest.mark.slow
TARGET_EPSILON = "10"
ROUNDS = 3


def test_federate_command_trains_privately_logs_the_tier_and_registers_it(prefect_api, cj_slice, tmp_path):
    """`lightpersml federate` on the slice: DP-SGD rounds until the ε target, the federated tier
    logged with every tier metric plus ε and δ, per-round ε in the parent run, a registered version
    that becomes a signed edge bundle a node serves."""
    import re

    from typer.testing import CliRunner

    import mlflow
    from lightpersml.cli import app
    from tracking.runs import TIER_METRICS

    result = CliRunner().invoke(
        app,
        [
            "federate",
            "--data",
            str(cj_slice),
            "--nodes",
            "2",
            "--rounds",
            str(ROUNDS),
            "--noise-multiplier",
            "1.0",
            "--target-epsilon",
            TARGET_EPSILON,
            "--aggregation",
            "fedtrimmedavg",
        ],
    )
    assert result.exit_code == 0, result.output
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", result.output).group(1)
    version = re.search(r"registered as version (\d+)", result.output).group(1)
    client = mlflow.MlflowClient()
    epsilons = [m.value for m in client.get_metric_history(run_id, "test_round_epsilon")]
    delta = client.get_metric_history(run_id, "test_round_delta")[-1].value
    assert delta == pytest.approx(1 / len(pd.read_parquet(cj_slice / "users.parquet")))
    # ε recomputed by a fresh accountant from the steps every node reported it applied, round by round.
    audit = mlflow.artifacts.load_dict(f"runs:/{run_id}/federated/test-fit.json")
    applied = [
        [(s["noise_multiplier"], s["sample_rate"], s["steps"]) for s in nodes] for nodes in audit["privacy_rounds"]
    ]
    assert len(applied) == len(epsilons) >= 1 and all(len(nodes) == 2 for nodes in applied)
    assert all(sigma == 1.0 and 0 < q <= 1 and steps >= 1 for nodes in applied for sigma, q, steps in nodes)
    accountant = RDPAccountant()
    for nodes, logged in zip(applied, epsilons):
        accountant.history += nodes
        assert accountant.get_epsilon(delta) == pytest.approx(logged, rel=1e-9)
    assert epsilons == sorted(epsilons) and epsilons[-1] <= float(TARGET_EPSILON)
    if len(applied) < ROUNDS:  # it stopped early only because one more such round would pass the target
        accountant.history += applied[-1]
        assert accountant.get_epsilon(delta) > float(TARGET_EPSILON)
    ndcg = [m.value for m in client.get_metric_history(run_id, "test_round_validation_ndcg_at_10")]
    assert len(ndcg) == len(applied) + 1 and ndcg[-1] > ndcg[0] + 0.02, ndcg  # round 0 is the random initial model
    sent = client.get_metric_history(run_id, "test_round_bytes_per_node")[-1].value
    from models.candidates import FEATURE_NAMES
    from models.ranker import CandidateRanker
    from training.distill import STUDENTS

    edge = CandidateRanker(len(FEATURE_NAMES), n_items=1, log_features=True, **STUDENTS["edge"]["architecture"])
    weights = 4 * sum(v.numel() for v in edge.state_dict().values())  # float32 weights and standardisation buffers
    assert weights <= sent < weights + 2_000  # plus one .npy header per array
    tier_run = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'", output_format="list", search_all_experiments=True
    )
    assert [r.data.tags["tier"] for r in tier_run] == ["federated"]
    assert set(TIER_METRICS) | {"epsilon", "delta"} <= set(tier_run[0].data.metrics)
    registered = client.get_model_version(config.registered_model(cj_slice.name), version)
    assert registered.tags["tier"] == "federated" and float(registered.tags["deploy_fit_epsilon"]) <= float(
        TARGET_EPSILON
    )

    from edge.bundle import load_public_key
    from edge.engine import Engine

    keys = tmp_path / "keys"
    assert CliRunner().invoke(app, ["keys", "init", "--folder", str(keys)]).exit_code == 0
    built = CliRunner().invoke(
        app,
        ["bundle", "--version", version, "--out", str(tmp_path / "bundle"), "--key", str(keys / "bundle-signing.key")],
    )
    assert built.exit_code == 0, built.output
    engine = Engine.load(tmp_path / "bundle", load_public_key(keys / "bundle-signing.pub"))
    user = str(engine.catalog.user_ids[0])
    assert len(engine.recommend(user, str(engine.catalog.store_ids[0]), 10).items) == 10


def test_a_round_past_the_privacy_target_registers_nothing(prefect_api, cj_slice):
    from typer.testing import CliRunner

    import mlflow
    from lightpersml.cli import app

    def versions() -> int:
        return len(mlflow.MlflowClient().search_model_versions())

    before = versions()
    result = CliRunner().invoke(
        app,
        [
            "federate",
            "--data",
            str(cj_slice),
            "--nodes",
            "2",
            "--rounds",
            "1",
            "--noise-multiplier",
            "1.0",
            "--target-epsilon",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert "past the target 1" in result.output and "nothing was registered" in result.output
    assert versions() == before

"""`lightpersml federate` on the slice, in Flower's simulation engine: two store-group nodes train
the edge-sized ranker with DP-SGD on their own data; the server aggregates, accounts ε and scores
each round's global model on the central validation lists."""

from __future__ import annotations

import pandas as pd
import pytest

from lightpersml import config

pytestmark = pytest.mark.slow
TARGET_EPSILON = "10"  # on the slice (2 nodes), ε after rounds 1, 2, 3 is 6.0, 9.2, 12.0 (measured)


def test_federate_command_trains_privately_logs_the_tier_and_registers_it(prefect_api, cj_slice, tmp_path):
    """`lightpersml federate` on the slice: DP-SGD rounds until the ε target, the federated tier
    logged with every tier metric plus ε and δ, per-round ε in the parent run, a registered version
    that becomes a signed edge bundle a node serves."""
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
    ndcg = [m.value for m in client.get_metric_history(run_id, "test_round_validation_ndcg_at_10")]
    assert len(ndcg) == 3 and ndcg[2] > ndcg[0] + 0.02, ndcg  # round 0 is the random initial model
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

    from edge.bundle import load_public_key
    from edge.engine import Engine

    keys = tmp_path / "keys"
    assert CliRunner().invoke(app, ["keys", "init", "--folder", str(keys)]).exit_code == 0
    built = CliRunner().invoke(app, ["bundle", "--version", version, "--out", str(tmp_path / "bundle"),
                                     "--key", str(keys / "bundle-signing.key")])
    assert built.exit_code == 0, built.output
    engine = Engine.load(tmp_path / "bundle", load_public_key(keys / "bundle-signing.pub"))
    user = str(engine.catalog.user_ids[0])
    assert len(engine.recommend(user, str(engine.catalog.store_ids[0]), 10).items) == 10


def test_a_round_past_the_privacy_target_registers_nothing(prefect_api, cj_slice):
    import mlflow
    from typer.testing import CliRunner

    from lightpersml.cli import app

    def versions() -> int:
        return len(mlflow.MlflowClient().search_model_versions())

    before = versions()
    result = CliRunner().invoke(app, ["federate", "--data", str(cj_slice), "--nodes", "2", "--rounds", "1",
                                      "--noise-multiplier", "1.0", "--target-epsilon", "1"])
    assert result.exit_code == 1
    assert "past the target 1" in result.output and "nothing was registered" in result.output
    assert versions() == before

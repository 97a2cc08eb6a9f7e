"""The training flow end to end on real local components: Prefect's local API, MLflow on
SQLite, Great Expectations, the `lightpersml` CLI."""

from __future__ import annotations

import math
import re
import shutil
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import mlflow
from data_contracts import schema
from data_contracts.errors import DataValidationError
from lightpersml import config
from lightpersml.cli import app
from models.metrics import evaluate
from tracking.runs import TIER_METRICS
from training.tuning import REPORT_EVERY

pytestmark = pytest.mark.slow
runner = CliRunner()


TIERS = ["balanced", "edge", "full", "full_native", "g_topfreq", "p_topfreq", "tifu_knn"]


def child_runs(parent_run_id: str, tiers_only: bool = True) -> list:
    """The pipeline run's children: one per tier (and, with tiers_only=False, the tuning run)."""
    parent = mlflow.get_run(parent_run_id)
    runs = mlflow.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", output_format="list"
    )
    return [r for r in runs if "tier" in r.data.tags or not tiers_only]


def registry_versions() -> int:
    return len(mlflow.MlflowClient().search_model_versions())


def versions_of(slice_run) -> dict:
    """tier → list_versions row of the versions this pipeline run registered."""
    from tracking.registry import list_versions

    return {v.tier: v for v in list_versions(slice_run["model"]) if v.pipeline_run_id == slice_run["run_id"]}


@pytest.fixture(scope="module")
def slice_run(prefect_api, cj_slice):
    """`lightpersml run` on the slice; the run id is read from what the command prints."""
    result = runner.invoke(app, ["run", "--data", str(cj_slice), "--profile", "smoke"])
    assert result.exit_code == 0, result.output
    assert "Tiers on the test split" in result.output and "tifu_knn" in result.output
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", result.output).group(1)
    run = mlflow.get_run(run_id)
    return {
        "run_id": run_id,
        "data_hash": run.data.params["data_hash"],
        "output": result.output,
        "model": config.registered_model(run.data.tags["dataset"]),
    }


def test_parent_run_has_a_child_per_tier_with_every_metric(slice_run):
    children = child_runs(slice_run["run_id"])
    assert sorted(r.data.tags["tier"] for r in children) == TIERS
    for run in children:
        tier, metrics = run.data.tags["tier"], run.data.metrics
        assert set(TIER_METRICS) <= set(metrics), tier
        assert not set(run.data.params) & set(metrics), tier  # a number is a metric or a param, never both
        assert all(math.isfinite(value) for value in metrics.values()), tier  # absent means absent, never NaN
        assert run.data.tags["data_hash"] == slice_run["data_hash"]
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", run.data.tags["git_sha"])  # the checkout's commit
        assert 0 < metrics["latency_p50_ms"] <= metrics["latency_p95_ms"] <= metrics["latency_p99_ms"] < 1000, tier
        # a real process (Python, numpy, ONNX Runtime: > 20 MB), in MB not KB or bytes
        assert 20 < metrics["peak_memory_mb"] < 8192 and metrics["model_size_mb"] > 0 and metrics["param_count"] > 0, (
            tier
        )
        assert 0 <= metrics["ndcg_at_10"] <= 1 and 0 <= metrics["coverage_at_10"] <= 1, tier
    parent = mlflow.get_run(slice_run["run_id"])
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(slice_run["run_id"])}
    assert {"pareto.png", "tiers.md", "tiers.json", "validation"} <= artifacts
    by_tier = {r.data.tags["tier"]: r.data.metrics for r in children}
    assert by_tier["edge"]["latency_p99_ratio_to_cloud"] == pytest.approx(
        by_tier["edge"]["latency_p99_ms"] / by_tier["full_native"]["latency_p99_ms"], rel=1e-6
    )
    assert by_tier["full_native"]["onnx_native_top10_overlap"] >= 0.99  # the exported teacher ranks like LightGBM
    assert all("fp32_ndcg_at_10" in by_tier[t] for t in ("balanced", "edge"))
    assert by_tier["edge"]["param_count"] <= 250_000 and by_tier["edge"]["model_size_mb"] <= 1.0
    smoke = config.PROFILES["smoke"]
    for tier, metrics in by_tier.items():  # the spread of NDCG@10 over the neural tiers' training seeds
        neural = tier not in ("g_topfreq", "p_topfreq", "tifu_knn")
        assert metrics["seeds"] == (smoke.seeds if neural else 1), tier
        assert metrics["ndcg_at_10_seed_std"] >= 0 and (neural or metrics["ndcg_at_10_seed_std"] == 0), tier
        if not neural:
            assert metrics["ndcg_at_10_seed_mean"] == metrics["ndcg_at_10"], tier


def test_teacher_trials_are_nested_runs_with_a_score_every_few_rounds(slice_run):
    tuning = [r for r in child_runs(slice_run["run_id"], tiers_only=False) if r.data.tags.get("kind") == "tuning"]
    assert len(tuning) == 1
    trials = child_runs(tuning[0].info.run_id, tiers_only=False)
    smoke = config.PROFILES["smoke"]
    # At most the profile's trials; fewer when the study's time budget runs out on a busy machine.
    assert 1 <= len(trials) <= smoke.tuning_trials
    for trial in trials:
        state = trial.data.tags["state"]
        steps = [m.step for m in mlflow.MlflowClient().get_metric_history(trial.info.run_id, "validation_ndcg_at_10")]
        # complete (every REPORT_EVERY rounds until the last or early stopping), pruned, or
        # stopped by the budget: in order from the first report
        assert state in ("complete", "pruned") or state.startswith("complete: stopped after round"), state
        assert steps == list(range(REPORT_EVERY, REPORT_EVERY * len(steps) + 1, REPORT_EVERY)), state
        assert 1 <= len(steps) <= smoke.max_rounds // REPORT_EVERY, state


def test_registered_versions_are_the_refit_onnx_models_with_candidate_set(slice_run, cj_slice):
    versions = versions_of(slice_run).values()
    assert slice_run["model"] == config.registered_model(cj_slice.name)  # the dataset's own registered model
    assert sorted(v.tier for v in versions) == ["balanced", "edge", "full"]
    client = mlflow.MlflowClient()
    for v in versions:
        tags = client.get_model_version(slice_run["model"], v.version).tags
        assert (
            tags["fit"] == "all data"
            and tags["trained_until"] > mlflow.get_run(slice_run["run_id"]).data.params["test_cutoff"]
        )
        stored = client.get_logged_model(
            client.get_model_version(slice_run["model"], v.version).source[len("models:/") :]
        )
        assert stored.artifact_location.startswith(config.mlflow_artifact_root())  # in the project's store
    described = client.get_model_version(slice_run["model"], next(iter(versions)).version).description
    assert "Refit on all data" in described and client.get_registered_model(slice_run["model"]).description
    (candidate,) = [v for v in versions if "candidate" in v.aliases]
    said = f"alias candidate → version {candidate.version} ({candidate.tier}) of {slice_run['model']}"
    assert mlflow.get_run(slice_run["run_id"]).data.tags["candidate"].startswith(said)  # on the parent run
    assert said in " ".join(slice_run["output"].split())  # and in the terminal
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and "candidate" in listed.output and slice_run["model"] in listed.output


def test_the_flow_run_shows_the_candidate_and_the_tier_table_as_prefect_artifacts(slice_run):
    """The training flow run's Prefect artifacts: `candidate` says which version of this run is the
    candidate (or that none passed) and links the MLflow run; `tiers` has a row per tier, with the
    NDCG@10 its child run logged."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    run_id, model = slice_run["run_id"], slice_run["model"]
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    with get_client(sync_client=True) as client:
        candidates = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["candidate"])))
        (candidate,) = [a for a in candidates if run_id in a.description]  # "… (MLflow run <id>)"
        flow_run = client.read_flow_run(candidate.flow_run_id)
        (tiers,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["tiers"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])
            )
        )
    assert flow_run.name.startswith("training smoke on ") and flow_run.state.is_completed()
    assert candidate.type == "markdown" and tiers.type == "table"
    link = rf"\[MLflow run {run_id}\]\(http://127\.0\.0\.1:\d+/#/experiments/{experiment_id}/runs/{run_id}\b"
    assert re.search(link, candidate.data) and re.search(link, tiers.description)
    chosen = [v for v in versions_of(slice_run).values() if "candidate" in v.aliases]
    if chosen:
        (version,) = chosen
        said = f"**Candidate**: alias candidate → version {version.version} ({version.tier}) of {model}"
        assert candidate.data.startswith(said)
        assert f"| {version.version} ← candidate | {version.tier} |" in candidate.data
    else:
        assert candidate.data.startswith("**Candidate**: no version of this run passes the gates")
        assert "← candidate" not in candidate.data
    rows = json.loads(tiers.data)
    assert sorted(row["tier"] for row in rows) == TIERS
    logged = {r.data.tags["tier"]: r.data.metrics["ndcg_at_10"] for r in child_runs(run_id)}
    assert all(row["ndcg_at_10"] == pytest.approx(logged[row["tier"]], abs=5e-5) for row in rows)


def test_the_candidate_passes_the_default_gates_and_promotion_is_refused_or_forced_past_them(slice_run):
    """The pipeline picked `candidate` with the default gates; `promote` with no overrides (the
    same default gates, checked again) accepts it. A gate tightened on the command line refuses a
    version, and only --force with a reason moves the alias past it."""
    client, model = mlflow.MlflowClient(), slice_run["model"]
    versions = versions_of(slice_run)
    (candidate,) = [v.version for v in versions.values() if "candidate" in v.aliases]
    result = runner.invoke(app, ["promote", str(candidate)])
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias(model, "edge").version) == str(candidate)
    assert client.get_model_version(model, str(candidate)).tags["promotion_forced"] == "false"
    full = str(versions["full"].version)
    refused = runner.invoke(app, ["promote", full, "--max-size-mb", "0.001"])
    assert refused.exit_code == 1 and "size" in refused.output
    assert str(client.get_model_version_by_alias(model, "edge").version) == str(candidate)
    assert runner.invoke(app, ["promote", full, "--max-size-mb", "0.001", "--force"]).exit_code == 2
    forced = runner.invoke(app, ["promote", full, "--max-size-mb", "0.001", "--force", "--reason", "test"])
    assert forced.exit_code == 0, forced.output
    tags = client.get_model_version(model, full).tags
    assert tags["promotion_forced"] == "true" and tags["promotion_reason"] == "test" and tags["promoted_by"]


def test_recommend_output_reproduces_the_logged_metrics(slice_run, cj_slice, tmp_path):
    """Export recommendations for the test requests (each shopper at their basket's store and time)
    with the CLI, score them with the project's metrics against the test baskets, and compare with
    what the tier's run logged: both are the tier's bundle answering through the node's engine."""
    from splits.temporal import build_splits

    splits, hit = build_splits(None, slice_run["data_hash"], config.state_dir() / "features")
    assert hit
    test = splits["test"]
    users = sorted(test.targets)
    pd.DataFrame(
        {
            "user_id": [test.catalog.user_ids[u] for u in users],
            "store_id": [test.requests[u].store_id for u in users],
            "timestamp": pd.to_datetime([test.requests[u].at for u in users], unit="s", utc=True),
        }
    ).to_csv(tmp_path / "requests.csv", index=False)
    tier_runs = {r.data.tags["tier"]: r.info.run_id for r in child_runs(slice_run["run_id"])}
    for tier in ("g_topfreq", "p_topfreq", "tifu_knn", "edge"):
        out = tmp_path / f"{tier}.parquet"
        model = f"runs:/{tier_runs[tier]}/model"  # this pipeline run's tier, whatever ran after it
        result = runner.invoke(
            app, ["recommend", "--model", model, "--requests", str(tmp_path / "requests.csv"), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        recs = pd.read_parquet(out).sort_values(["user_id", "rank"])
        ranked = recs.groupby("user_id")["item_id"].apply(list).to_dict()
        baskets = {
            test.catalog.user_ids[u]: {test.catalog.item_ids[i] for i in items} for u, items in test.targets.items()
        }
        seen = {
            test.catalog.user_ids[u]: {test.catalog.item_ids[i] for i in items}
            for u, items in test.seen_items().items()
        }
        scored = evaluate(ranked, baskets, seen, len(test.catalog.item_ids))
        logged = next(r for r in child_runs(slice_run["run_id"]) if r.data.tags["tier"] == tier).data.metrics
        for name in (
            "precision_at_10",
            "recall_at_10",
            "ndcg_at_10",
            "hr_at_10",
            "recall_repeat_at_10",
            "coverage_at_10",
        ):
            assert scored[name] == pytest.approx(logged[name], abs=1e-9), (tier, name)


def test_recommend_respects_store_stock(slice_run, cj_slice, tmp_path):
    availability = pd.read_parquet(cj_slice / "availability.parquet")
    store = availability[schema.STORE_ID].value_counts().index[0]
    # Complete Journey lists what a store sold or promoted in the last weeks, all in stock.
    stocked = set(availability[availability[schema.STORE_ID] == store][schema.ITEM_ID])
    users = pd.read_parquet(cj_slice / "events.parquet")[schema.USER_ID].unique()[:20]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\nnew-shopper\n")
    out = tmp_path / "recs.csv"
    # The registered refit knows the whole availability table (an evaluation fit only stock known
    # before its test cutoff).
    ask = [
        "recommend",
        "--model",
        f"models:/{slice_run['model']}@candidate",
        "--requests",
        str(tmp_path / "users.txt"),
        "--out",
        str(out),
        "--k",
        "5",
    ]
    result = runner.invoke(app, [*ask, "--store", store])
    assert result.exit_code == 0, result.output
    recs = pd.read_csv(out, dtype={"item_id": str, "user_id": str})
    assert set(recs["item_id"]) <= stocked
    assert recs.groupby("user_id").size().max() == 5 and "new-shopper" in set(recs["user_id"])
    unknown = runner.invoke(app, [*ask, "--store", "no-such-store"])  # as a node answers it, and said
    assert unknown.exit_code == 0 and "21 requests at a store the bundle does not know" in " ".join(
        unknown.output.split()
    )


def test_recommend_exports_what_the_candidate_version_serves(slice_run, tmp_path):
    """`recommend --model models:/NAME@candidate` answers from the registered refit's bundle (trained
    on all data, past the test cutoff), exactly as that version's signed bundle does on a node."""
    from edge.bundle import load_public_key
    from edge.engine import Engine
    from evaluation.served import signing_keys
    from tracking.bundles import registry_bundle

    (candidate,) = [v for v in versions_of(slice_run).values() if "candidate" in v.aliases]
    private, public = signing_keys()
    registry_bundle(tmp_path / "bundle", private, slice_run["model"], version=candidate.version)
    engine = Engine.load(tmp_path / "bundle", load_public_key(public))
    test_cutoff = pd.Timestamp(mlflow.get_run(slice_run["run_id"]).data.params["test_cutoff"])
    assert pd.Timestamp(engine.serving["trained_until"]) > test_cutoff  # the refit, not the evaluation fit
    stores = engine.catalog.store_ids[np.argsort(-np.diff(engine.catalog.in_stock.indptr), kind="stable")[:3]]
    users = [str(u) for u in engine.catalog.user_ids[:12]]
    requests = pd.DataFrame({"user_id": users, "store_id": [str(stores[j % 3]) for j in range(len(users))]})
    requests.to_csv(tmp_path / "requests.csv", index=False)
    out = tmp_path / "recs.csv"
    result = runner.invoke(
        app,
        [
            "recommend",
            "--model",
            f"models:/{slice_run['model']}@candidate",
            "--requests",
            str(tmp_path / "requests.csv"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"version {candidate.version} ({candidate.tier}; " in result.output and "candidate" in result.output
    exported = pd.read_csv(out, dtype=str)
    for request in requests.itertuples(index=False):
        expected = [r.item_id for r in engine.recommend(request.user_id, request.store_id, 10).items]
        assert exported[exported["user_id"] == request.user_id]["item_id"].tolist() == expected


def test_broken_data_stops_before_training_and_touches_nothing(prefect_api, cj_slice, tmp_path):
    from flows.train import training_flow

    broken = tmp_path / "broken"
    shutil.copytree(cj_slice, broken)
    events = pd.read_parquet(broken / "events.parquet")
    events.loc[events.index[::20], schema.ITEM_ID] = "NO-SUCH-ITEM"  # 5%: over the 1% a run quarantines
    events.to_parquet(broken / "events.parquet", index=False)
    versions = registry_versions()
    features = set((config.state_dir() / "features").glob("*"))
    with pytest.raises(DataValidationError, match="item_id"):
        training_flow(data=str(broken), profile="smoke")
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.source = '{broken}'", output_format="list"
    )
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert child_runs(runs[0].info.run_id) == []
    assert registry_versions() == versions
    assert set((config.state_dir() / "features").glob("*")) == features
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 1 and "NO-SUCH-ITEM" in result.output


def test_a_refused_run_prints_one_message_and_no_traceback(cj_slice, tmp_path):
    """What a user sees in the terminal: `lightpersml run` as its own process (its own Prefect API)."""
    import os
    import subprocess
    import sys

    broken = tmp_path / "voids"
    shutil.copytree(cj_slice, broken)
    events = pd.read_parquet(broken / "events.parquet")
    events.loc[events.index[::10], schema.QUANTITY] = 0  # 10% void lines
    events.to_parquet(broken / "events.parquet", index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    done = subprocess.run(
        [sys.executable, "-m", "lightpersml.cli", "run", "--data", str(broken), "--profile", "smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    terminal = done.stdout + done.stderr
    assert done.returncode == 1, terminal[-3000:]
    assert terminal.count("Data validation failed for 'voids'") == 1 and "10.00% of" in terminal
    assert "over the limit of 1%" in terminal and "report.json" in terminal and "report.html" in terminal
    assert "Traceback" not in terminal, terminal[-3000:]


def test_ui_serves_the_runs_over_http(slice_run, project_home):
    """`lightpersml ui` starts a real MLflow server on 127.0.0.1; its REST API lists the tier runs."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    def start(port: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "lightpersml.cli", "ui", "--port", str(port)],
            env={**os.environ, "LIGHTPERSML_HOME": str(project_home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def healthy(url: str) -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    for _ in range(3):  # a port free when chosen may be taken before the server binds it: retry
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server, url, deadline = start(port), f"http://127.0.0.1:{port}", time.monotonic() + 120
        while server.poll() is None and not healthy(url):
            assert time.monotonic() < deadline, "MLflow UI did not start"
            time.sleep(0.5)
        if server.poll() is None:
            break
    assert server.poll() is None, "MLflow UI exited at start, 3 times"
    try:
        parent = mlflow.get_run(slice_run["run_id"])
        found = httpx.post(
            f"{url}/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [parent.info.experiment_id],
                "filter": f"tags.mlflow.parentRunId = '{slice_run['run_id']}'",
            },
            timeout=10,
        ).json()["runs"]
        tiers = {tag["value"] for run in found for tag in run["data"]["tags"] if tag["key"] == "tier"}
        assert tiers == set(TIERS)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_registered_edge_version_becomes_a_signed_bundle_a_node_serves(slice_run, tmp_path):
    """`lightpersml keys init` + `lightpersml bundle --version` on the edge tier this pipeline run
    registered (by version: no other test's promotion changes what is bundled)."""
    from edge.bundle import load_public_key, verify_bundle
    from edge.engine import Engine

    edge = versions_of(slice_run)["edge"].version
    keys = runner.invoke(app, ["keys", "init", "--folder", str(tmp_path / "keys")])
    assert keys.exit_code == 0, keys.output
    built = runner.invoke(
        app,
        [
            "bundle",
            "--out",
            str(tmp_path / "bundle"),
            "--version",
            str(edge),
            "--key",
            str(tmp_path / "keys" / "bundle-signing.key"),
        ],
    )
    assert built.exit_code == 0, built.output
    public = load_public_key(tmp_path / "keys" / "bundle-signing.pub")
    manifest = verify_bundle(tmp_path / "bundle", public)
    assert (
        manifest["model_version"] == str(edge) and manifest["tier"] == "edge" and manifest["metrics"]["ndcg_at_10"] > 0
    )
    engine = Engine.load(tmp_path / "bundle", public)
    user = str(engine.catalog.user_ids[0])
    assert len(engine.recommend(user, str(engine.catalog.store_ids[0]), 10).items) == 10


def test_a_real_node_serving_a_tier_bundle_scores_what_mlflow_logged(slice_run, tmp_path):
    """The edge tier's logged bundle on a real node process, asked for every test shopper at their
    basket's store and start time: the protocol's metrics of its answers are the tier run's metrics."""

    from evaluation.served import evaluate_recommendations, signing_keys
    from splits.temporal import build_splits
    from tests.edge.conftest import NodeProcess

    test = build_splits(None, slice_run["data_hash"], config.state_dir() / "features")[0]["test"]
    run = next(r for r in child_runs(slice_run["run_id"]) if r.data.tags["tier"] == "edge")
    engine = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").unwrap_python_model().engine
    item_index = {str(item): j for j, item in enumerate(test.catalog.item_ids)}
    node = NodeProcess(tmp_path, signing_keys()[1]).start(engine.folder)
    try:
        answers = {}
        with node.client() as client:
            for user in sorted(test.targets):
                request = test.requests[user]
                store = request.store_id or "no-such-store"  # a node takes a store; unknown = none
                at = datetime.fromtimestamp(request.at, UTC).isoformat()
                body = client.get(
                    "/v1/recommendations",
                    params={"user_id": str(test.catalog.user_ids[user]), "store_id": store, "k": 10, "at": at},
                ).json()
                answers[user] = [item_index[item["item_id"]] for item in body["items"]]
    finally:
        node.stop()
    scored = evaluate_recommendations(answers, test)
    for name in (
        "ndcg_at_10",
        "recall_at_10",
        "precision_at_10",
        "hr_at_10",
        "recall_repeat_at_10",
        "recall_explore_at_10",
        "coverage_at_10",
    ):
        assert scored[name] == pytest.approx(run.data.metrics[name], abs=1e-9), name

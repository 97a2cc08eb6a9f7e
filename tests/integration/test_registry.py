"""The model registry on real MLflow (this module's SQLite store): tier versions and their tags,
the `candidate` alias chosen through the gates, `edge` promotion (refused, forced), one registered
model per dataset, and the `models` / `promote` commands. Each test registers under its own
dataset's model."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
from mlflow.entities import Metric
from onnx import TensorProto, helper
from typer.testing import CliRunner

import mlflow
from lightpersml import config
from lightpersml.cli import app
from lightpersml.config import Gates
from tracking.registry import (
    KEY_METRICS,
    PromotionRefused,
    UnknownVersion,
    gate_failures,
    list_versions,
    promote,
    register_tier,
    update_candidate,
)
from tracking.runs import experiment_id

runner = CliRunner()
GATES = Gates(min_ndcg_ratio_to_teacher=0.9, max_latency_p99_ms=20.0, max_model_size_mb=1.0)

# tier → (teacher?, metrics). With GATES and the default Gates() only `int8` and `small` pass
# (NDCG 96 % and 97 % of the teacher's); `small` has the better NDCG.
PIPELINE = {
    "teacher": (
        True,
        {
            "ndcg_at_10": 0.30,
            "recall_at_10": 0.40,
            "recall_repeat_at_10": 0.5,
            "recall_explore_at_10": 0.10,
            "latency_p99_ms": 80.0,
            "peak_memory_mb": 300.0,
            "model_size_mb": 12.0,
            "param_count": 3_000_000,
        },
    ),
    "fp32": (
        False,
        {
            "ndcg_at_10": 0.295,
            "recall_at_10": 0.39,
            "recall_repeat_at_10": 0.5,
            "recall_explore_at_10": 0.09,
            "latency_p99_ms": 4.0,
            "peak_memory_mb": 40.0,
            "model_size_mb": 1.5,
            "param_count": 390_000,
        },
    ),  # too big
    "int8": (
        False,
        {
            "ndcg_at_10": 0.288,
            "recall_at_10": 0.37,
            "recall_repeat_at_10": 0.5,
            "recall_explore_at_10": 0.08,
            "latency_p99_ms": 3.0,
            "peak_memory_mb": 30.0,
            "model_size_mb": 0.4,
            "param_count": 390_000,
        },
    ),
    "small": (
        False,
        {
            "ndcg_at_10": 0.291,
            "recall_at_10": 0.38,
            "recall_repeat_at_10": 0.5,
            "recall_explore_at_10": 0.07,
            "latency_p99_ms": 2.0,
            "peak_memory_mb": 20.0,
            "model_size_mb": 0.9,
            "param_count": 200_000,
        },
    ),
    "tiny": (
        False,
        {
            "ndcg_at_10": 0.200,
            "recall_at_10": 0.30,
            "recall_repeat_at_10": 0.5,
            "recall_explore_at_10": 0.02,
            "latency_p99_ms": 1.0,
            "peak_memory_mb": 10.0,
            "model_size_mb": 0.05,
            "param_count": 1_000,
        },
    ),  # ratio 67 %
}


def tiny_onnx(path: Path, scale: float = 1.0) -> Path:
    """A real ONNX model: scores (rows,) = features (rows, 4) @ w, with a dynamic number of rows."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], (scale * np.arange(1, 5, dtype=np.float32)).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["scores"])],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["rows", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["rows"])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def experiment() -> str:
    return experiment_id(f"test-registry-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def dataset() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def name(dataset) -> str:
    return config.registered_model(dataset)


def pipeline_run(experiment: str, name: str, tmp_path: Path, tiers: dict = PIPELINE) -> dict:
    """A parent run with a finished child run per tier, each tier's ONNX registered under `name`.
    Returns {"run_id": parent, "versions": {tier: version}, "runs": {tier: child run id}}."""
    client = mlflow.MlflowClient()
    parent = client.create_run(experiment, run_name="training-test", tags={"kind": "pipeline"}).info.run_id
    versions, runs = {}, {}
    for i, (tier, (teacher, metrics)) in enumerate(tiers.items()):
        child = client.create_run(
            experiment, run_name=tier, tags={"tier": tier, "mlflow.parentRunId": parent}
        ).info.run_id
        client.log_batch(child, metrics=[Metric(key, float(value), 0, 0) for key, value in metrics.items()])
        client.set_terminated(child)
        path = tiny_onnx(tmp_path / f"{parent}-{tier}.onnx", scale=i + 1)
        versions[tier] = register_tier(child, path, tier, metrics, parent, teacher, name=name)
        runs[tier] = child
    client.set_terminated(parent)
    return {"run_id": parent, "versions": versions, "runs": runs}


def flat(output: str) -> str:
    """CLI output as one line: Rich wraps long lines at the terminal's width (e.g. inside a long
    store path) and Typer draws a box around usage errors; both are undone here."""
    return " ".join(output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def aliases(name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in mlflow.MlflowClient().get_registered_model(name).aliases.items()}


def test_each_tier_is_a_version_with_tier_and_metric_tags(experiment, name, tmp_path):
    run = pipeline_run(experiment, name, tmp_path)
    client = mlflow.MlflowClient()
    assert sorted(run["versions"].values(), key=int) == ["1", "2", "3", "4", "5"]
    for tier, version in run["versions"].items():
        teacher, metrics = PIPELINE[tier]
        model_version = client.get_model_version(name, version)
        tags = model_version.tags
        assert tags["tier"] == tier and tags["pipeline_run_id"] == run["run_id"]
        assert tags["teacher"] == ("true" if teacher else "false")
        assert {k: float(tags[k]) for k in KEY_METRICS} == pytest.approx(metrics)
        assert float(tags["onnx_size_mb"]) > 0
        assert model_version.run_id == run["runs"][tier]
        # logged into the existing child run, which stays finished
        child = client.get_run(run["runs"][tier])
        assert child.info.status == "FINISHED"
        (output,) = child.outputs.model_outputs
        assert model_version.source == f"models:/{output.model_id}"
        stored = client.get_logged_model(output.model_id)  # with the run's experiment, in the project's store
        assert stored.experiment_id == experiment
        assert stored.artifact_location.startswith(config.mlflow_artifact_root())
    rows = list_versions(name)
    assert [r.tier for r in rows] == list(PIPELINE)
    assert rows[0].teacher and rows[0].param_count == 3_000_000 and rows[0].run_id == run["runs"]["teacher"]
    assert rows[1].model_size_mb == pytest.approx(1.5) and rows[1].created.endswith("+00:00")
    assert all(r.aliases == () and r.pipeline_run_id == run["run_id"] for r in rows)


def test_model_size_defaults_to_the_onnx_file(experiment, name, tmp_path):
    run = pipeline_run(experiment, name, tmp_path, {"teacher": (True, {"ndcg_at_10": 0.3, "latency_p99_ms": 1.0})})
    path = tmp_path / f"{run['run_id']}-teacher.onnx"
    (row,) = list_versions(name)
    assert row.model_size_mb == pytest.approx(path.stat().st_size / 2**20)
    assert row.recall_at_10 is None
    assert gate_failures(run["versions"]["teacher"], GATES, name=name) == []  # the teacher is its own reference


def test_gate_failures_explain_each_gate(experiment, name, tmp_path):
    versions = pipeline_run(experiment, name, tmp_path)["versions"]
    assert gate_failures(versions["int8"], GATES, name=name) == []
    assert gate_failures(versions["small"], GATES, name=name) == []
    (too_big,) = gate_failures(versions["fp32"], GATES, name=name)
    assert "model size 1.5 MB exceeds the maximum 1 MB" in too_big
    (too_weak,) = gate_failures(versions["tiny"], GATES, name=name)
    assert "66.7% of the teacher version 1 (teacher)'s 0.3000" in too_weak and "minimum 90%" in too_weak
    teacher = gate_failures(versions["teacher"], GATES, name=name)
    assert len(teacher) == 2 and "p99 latency 80 ms" in teacher[0] and "model size 12 MB" in teacher[1]
    assert gate_failures(versions["fp32"], Gates(max_model_size_mb=2.0), name=name) == []
    with pytest.raises(UnknownVersion, match="has no version 99"):
        gate_failures("99", GATES, name=name)
    with pytest.raises(UnknownVersion, match="no registered model"):
        gate_failures("1", GATES, name=f"{name}-missing")


def test_candidate_is_the_best_passing_version_of_its_own_pipeline_run(experiment, name, tmp_path):
    first = pipeline_run(experiment, name, tmp_path)
    choice = update_candidate(first["run_id"], GATES, name=name)
    assert (choice.version, choice.tier, choice.passing, choice.versions) == (first["versions"]["small"], "small", 2, 5)
    assert aliases(name) == {"candidate": first["versions"]["small"]}
    assert mlflow.get_run(first["run_id"]).data.tags["candidate"] == choice.summary()
    assert choice.summary().startswith(f"alias candidate → version {first['versions']['small']} (small) of {name}")
    # Every version records its gate results, and the parent run lists them all with the reasons.
    client = mlflow.MlflowClient()
    results = {tier: client.get_model_version(name, v).tags["gate_results"] for tier, v in first["versions"].items()}
    assert results["small"] == "passed" and results["fp32"].startswith("failed: model size 1.5 MB exceeds")
    table = mlflow.artifacts.load_text(f"runs:/{first['run_id']}/gates.md")
    assert f"| {first['versions']['small']} ← candidate | small | 0.2910 | passed |" in table
    assert all(f"| {v}" in table for v in first["versions"].values()) and results["fp32"] in table

    # A later run whose teacher is much weaker: its student passes against its own teacher only,
    # and the first run's versions (better NDCG) must not be considered.
    second = pipeline_run(
        experiment,
        name,
        tmp_path,
        {
            "teacher": (True, {"ndcg_at_10": 0.10, "latency_p99_ms": 50.0, "model_size_mb": 9.0}),
            "int8": (False, {"ndcg_at_10": 0.095, "latency_p99_ms": 3.0, "model_size_mb": 0.3}),
        },
    )
    assert update_candidate(second["run_id"], GATES, name=name).version == second["versions"]["int8"]
    assert update_candidate(first["run_id"], GATES, name=name).version == first["versions"]["small"]

    # Nothing passes: the alias stays where it was, and the run says so.
    strict = Gates(min_ndcg_ratio_to_teacher=0.99, max_latency_p99_ms=0.5, max_model_size_mb=0.01)
    choice = update_candidate(second["run_id"], strict, name=name)
    assert choice.version is None and aliases(name) == {"candidate": first["versions"]["small"]}
    said = mlflow.get_run(second["run_id"]).data.tags["candidate"]
    assert said == choice.summary() and "no version of this run passes the gates (2 registered)" in said
    assert f"unchanged (still version {first['versions']['small']}, from an earlier run)" in said
    assert update_candidate("no-such-pipeline-run", GATES, name=name).version is None


def test_candidate_ties_go_to_the_smaller_model_and_a_run_without_teacher_has_none(experiment, name, tmp_path):
    same = {"ndcg_at_10": 0.29, "latency_p99_ms": 3.0}
    run = pipeline_run(
        experiment,
        name,
        tmp_path,
        {
            "teacher": (True, {"ndcg_at_10": 0.30, "latency_p99_ms": 9.0, "model_size_mb": 5.0}),  # fails: too big
            "a": (False, {**same, "model_size_mb": 0.5}),
            "b": (False, {**same, "model_size_mb": 0.2}),
            "c": (False, {**same, "model_size_mb": 0.7}),
        },
    )
    assert update_candidate(run["run_id"], GATES, name=name).version == run["versions"]["b"]

    orphan = pipeline_run(experiment, name, tmp_path, {"student": (False, {"ndcg_at_10": 0.5, "latency_p99_ms": 1.0})})
    (failure,) = gate_failures(orphan["versions"]["student"], GATES, name=name)
    assert "no teacher version" in failure and orphan["run_id"] in failure
    assert update_candidate(orphan["run_id"], GATES, name=name).version is None
    assert aliases(name) == {"candidate": run["versions"]["b"]}


def test_promote_checks_the_gates_and_records_forced_promotions(experiment, name, tmp_path):
    versions = pipeline_run(experiment, name, tmp_path)["versions"]
    client = mlflow.MlflowClient()

    assert promote(versions["int8"], GATES, name=name) == []
    assert aliases(name) == {"edge": versions["int8"]}
    tags = client.get_model_version(name, versions["int8"]).tags
    assert tags["promotion_forced"] == "false" and tags["promoted_by"] and tags["promoted_at"].endswith("+00:00")
    assert "promotion_reason" not in tags

    with pytest.raises(PromotionRefused) as refused:
        promote(versions["fp32"], GATES, name=name)
    assert refused.value.version == versions["fp32"] and "model size" in refused.value.failures[0]
    assert aliases(name) == {"edge": versions["int8"]}
    assert "promoted_by" not in client.get_model_version(name, versions["fp32"]).tags
    with pytest.raises(ValueError, match="non-empty reason"):
        promote(versions["fp32"], GATES, force=True, reason="  ", name=name)
    assert aliases(name) == {"edge": versions["int8"]}

    failures = promote(versions["fp32"], GATES, force=True, reason="pilot shop has a bigger box", name=name)
    assert failures and "model size" in failures[0]
    assert aliases(name) == {"edge": versions["fp32"]}
    tags = client.get_model_version(name, versions["fp32"]).tags
    assert tags["promotion_forced"] == "true" and tags["promotion_reason"] == "pilot shop has a bigger box"
    assert "model size" in tags["promotion_gate_failures"] and tags["replaced_edge_version"] == versions["int8"]
    assert tags["promoted_by"] and tags["promoted_at"]

    with pytest.raises(UnknownVersion):
        promote("42", GATES, name=name)
    with pytest.raises(UnknownVersion):
        promote("latest", GATES, name=name)

    # What the edge alias resolves to is the ONNX model of that version, ready for onnxruntime.
    import onnxruntime as ort

    model = mlflow.onnx.load_model(f"models:/{name}@edge")
    assert isinstance(model, onnx.ModelProto) and [i.name for i in model.graph.input] == ["features"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"features": np.ones((3, 4), dtype=np.float32)})
    scale = list(PIPELINE).index("fp32") + 1
    assert scores.tolist() == pytest.approx([10.0 * scale] * 3)


def test_models_command(experiment, dataset, name, tmp_path):
    result = runner.invoke(app, ["models", "--dataset", dataset])
    assert result.exit_code == 2, result.output
    assert f"no registered model for dataset '{dataset}'" in flat(result.output)
    assert "run `lightpersml run` on it first" in flat(result.output)

    versions = pipeline_run(experiment, name, tmp_path)["versions"]
    update_candidate(mlflow.MlflowClient().get_model_version(name, "1").tags["pipeline_run_id"], GATES, name=name)
    result = runner.invoke(app, ["models", "--dataset", dataset])
    assert result.exit_code == 0, result.output
    for tier in PIPELINE:
        assert tier in result.output
    small_line = next(line for line in result.output.splitlines() if " small " in line)
    assert "candidate" in small_line and "0.2910" in small_line and "200,000" in small_line
    assert versions["small"] in small_line


def test_promote_command_exit_codes(experiment, dataset, name, tmp_path):
    versions = pipeline_run(experiment, name, tmp_path)["versions"]

    result = runner.invoke(app, ["promote", versions["int8"], "--dataset", dataset])
    assert result.exit_code == 0, result.output
    assert f"now points to version {versions['int8']}" in flat(result.output) and "int8" in flat(result.output)
    assert aliases(name) == {"edge": versions["int8"]}

    result = runner.invoke(app, ["promote", versions["tiny"], "--dataset", dataset])
    assert result.exit_code == 1, result.output
    assert (
        "Refused" in flat(result.output)
        and "66.7%" in flat(result.output)
        and "--force --reason" in flat(result.output)
    )
    assert aliases(name) == {"edge": versions["int8"]}

    result = runner.invoke(app, ["promote", versions["tiny"], "--force", "--dataset", dataset])
    assert result.exit_code == 2, result.output
    assert aliases(name) == {"edge": versions["int8"]}

    result = runner.invoke(app, ["promote", "77", "--dataset", dataset])
    assert result.exit_code == 2 and "no version 77" in flat(result.output)

    # a threshold overridden on the command line
    result = runner.invoke(app, ["promote", versions["fp32"], "--dataset", dataset, "--max-size-mb", "2"])
    assert result.exit_code == 0, result.output
    assert aliases(name) == {"edge": versions["fp32"]}

    result = runner.invoke(
        app, ["promote", versions["tiny"], "--force", "--reason", "A/B test arm", "--dataset", dataset]
    )
    assert result.exit_code == 0, result.output
    assert f"now points to version {versions['tiny']}" in flat(result.output) and "Forced" in flat(result.output)
    assert aliases(name) == {"edge": versions["tiny"]}
    tags = mlflow.MlflowClient().get_model_version(name, versions["tiny"]).tags
    assert tags["promotion_forced"] == "true" and tags["promotion_reason"] == "A/B test arm"


def test_each_dataset_has_its_own_registered_model_and_commands_name_the_one_they_mean(experiment, tmp_path):
    """Two shops in one project: their versions and aliases never mix. Without --dataset a command
    refuses to guess, naming both; promoting in one leaves the other's aliases as they were."""
    first, second = f"shop-{uuid.uuid4().hex[:6]}", f"shop-{uuid.uuid4().hex[:6]}"
    runs = {d: pipeline_run(experiment, config.registered_model(d), tmp_path) for d in (first, second)}
    for d, run in runs.items():
        update_candidate(run["run_id"], GATES, name=config.registered_model(d))
    ambiguous = runner.invoke(app, ["models"])
    assert ambiguous.exit_code == 1 and "several datasets" in flat(ambiguous.output)
    assert first in ambiguous.output and second in ambiguous.output and "--dataset" in ambiguous.output
    promoted = runner.invoke(app, ["promote", runs[first]["versions"]["int8"], "--dataset", first])
    assert promoted.exit_code == 0, promoted.output
    assert aliases(config.registered_model(first)) == {
        "candidate": runs[first]["versions"]["small"],
        "edge": runs[first]["versions"]["int8"],
    }
    assert aliases(config.registered_model(second)) == {"candidate": runs[second]["versions"]["small"]}
    from edge.bundle import init_keys

    private, _ = init_keys(tmp_path / "keys")
    unknown = runner.invoke(
        app, ["bundle", "--dataset", "no-such-shop", "--key", str(private), "--out", str(tmp_path / "b")]
    )
    assert unknown.exit_code == 2 and "no registered model for dataset 'no-such-shop'" in flat(unknown.output)
    assert first in unknown.output and not (tmp_path / "b").exists()


def test_experiments_created_without_a_location_keep_their_artifacts_in_the_project(tmp_path, monkeypatch):
    """MLflow's `Default` experiment and one a benchmark creates by name alone: both under
    mlflow/artifacts, never ./mlruns of the folder the process happens to run in."""
    monkeypatch.chdir(tmp_path)
    created = mlflow.set_experiment(f"by-name-{uuid.uuid4().hex[:6]}")
    default = mlflow.MlflowClient().get_experiment("0")
    for experiment in (created, default):
        assert experiment.artifact_location.startswith(config.mlflow_artifact_root()), experiment.name
    with mlflow.start_run(experiment_id=created.experiment_id):
        mlflow.log_text("hello", "note.txt")
    assert not (tmp_path / "mlruns").exists()

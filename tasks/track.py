"""MLflow tracking: one experiment per dataset, a parent run per pipeline run, a child run per tier."""

from __future__ import annotations

import json
import subprocess
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from lightpersml import config
from edge import bundle
from models.metrics import METRIC_NAMES, K
from models.tier_bundle import ServingData, lay_out
from tasks import pyfunc_model
from tasks.evaluate import Served, evaluate_task, signed_bundle
from tasks.features import Split
from tasks.pyfunc_model import SIGNATURE
from tasks.register import register_tier
from tasks.tiers import FittedTier

SERVING_METRICS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "peak_memory_mb", "model_size_mb", "param_count")
TIER_METRICS = METRIC_NAMES + SERVING_METRICS
TABLE_COLUMNS = ("tier", "ndcg_at_10", "recall_at_10", "precision_at_10", "hr_at_10", "recall_repeat_at_10",
                 "recall_explore_at_10", "coverage_at_10", "latency_p99_ms", "latency_p99_ratio_to_cloud",
                 "peak_memory_mb", "model_size_mb", "param_count")


def git_sha() -> str:
    """The project's commit (with `-dirty` for uncommitted changes), or "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def experiment_id(dataset_name: str) -> str:
    """The experiment `lightpersml-<dataset>`, created with its artifacts under mlflow/artifacts/."""
    name = f"lightpersml-{dataset_name}"
    found = mlflow.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=f"{config.mlflow_artifact_root()}/{name}")


def start_parent_run(dataset_name: str, profile: str, source: str) -> tuple[str, str]:
    """Create the pipeline's parent run; returns (run_id, experiment_id)."""
    experiment = experiment_id(dataset_name)
    run = mlflow.MlflowClient().create_run(experiment, run_name=f"training-{profile}",
                                           tags={"git_sha": git_sha(), "dataset": dataset_name, "profile": profile,
                                                 "source": source, "kind": "pipeline"})
    return run.info.run_id, experiment


def finish_run(run_id: str, ok: bool) -> None:
    mlflow.MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def model_size_mb(folder: Path) -> float:
    """What a tier adds to the shared candidate state: its ranker file (model.onnx), or for a
    baseline with no model the candidate state it scores from (candidates.npz)."""
    model = folder / bundle.MODEL
    return (model if model.exists() else folder / bundle.CANDIDATES).stat().st_size / 2**20


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**20


# No retries: a retry after a partial failure would add a second child run for the same tier.
@task(name="log tier", cache_policy=NO_CACHE, task_run_name="log {fitted.name}")
def log_tier_task(fitted: FittedTier, folder: Path, metrics: dict[str, float], parent_run_id: str, data_hash: str,
                  split_info: dict) -> dict:
    """One child run: params, every metric name of DESIGN.md, tags, and the tier's signed bundle as
    the pyfunc model `model` (answered by the node's engine)."""
    parent = mlflow.get_run(parent_run_id)
    metrics = {**metrics, "model_size_mb": model_size_mb(folder), "param_count": fitted.param_count,
               "bundle_size_mb": folder_size_mb(folder), "fit_seconds": fitted.fit_seconds,
               "tuning_seconds": fitted.tuning_seconds}
    missing = [m for m in TIER_METRICS if m not in metrics]
    if missing:
        raise ValueError(f"tier {fitted.name} lacks metrics {missing}")
    tags = {"tier": fitted.name, "data_hash": data_hash, "git_sha": git_sha(), "fit": "evaluation",
            "runtime": fitted.runtime}
    with mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=fitted.name,
                          parent_run_id=parent_run_id, tags=tags) as run:
        mlflow.log_params({**fitted.params, **split_info, **{f"tuning_{k}": v for k, v in fitted.tuning.items()}})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        if fitted.runtime == "onnx":  # the cloud reference serves the teacher's bundle, logged with the teacher
            with warnings.catch_warnings():  # the explicit signature makes an input example unnecessary
                warnings.filterwarnings("ignore", message=".*An input example was not provided")
                mlflow.pyfunc.log_model(name="model", python_model=str(Path(pyfunc_model.__file__)),
                                        signature=SIGNATURE, artifacts={"bundle": str(folder)},
                                        pip_requirements=["lightpersml"])
    return {"tier": fitted.name, "run_id": run.info.run_id, **metrics}


def tier_bundle(fitted: FittedTier, data: ServingData, folder: Path) -> Path:
    """The tier's signed bundle under `folder` (a tier served by another runtime reuses the bundle
    its scorer was laid out in)."""
    target = Path(folder) / fitted.name.replace("/", "-")
    if fitted.runtime != "onnx":
        target = Path(folder) / fitted.scorer.tier
        if (target / bundle.MANIFEST).exists():
            return target
    return signed_bundle(data, fitted.scorer, target, {"evaluation_fit": True})


def evaluate_and_log(fitted: FittedTier, data: ServingData, folder: Path, split: Split, latency_requests: int,
                     parent_run_id: str, data_hash: str, split_info: dict, extra: dict | None = None) -> tuple[dict, Served]:
    """Sign the tier's bundle, serve the split through the engine, log its child run.
    Returns (row, what it served)."""
    target = tier_bundle(fitted, data, folder)
    served = evaluate_task(fitted.name, target, split, K, latency_requests, fitted.runtime)
    row = log_tier_task(fitted, target, served.metrics | (extra or {}), parent_run_id, data_hash, split_info)
    return row, served


def log_row_metrics(row: dict, metrics: dict[str, float]) -> None:
    """Add metrics known only after a tier's run was logged to its row and its run."""
    row |= metrics
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.log_metric(row["run_id"], key, float(value))


def log_latency_ratios(rows: list[dict], cloud_tier: str) -> list[dict]:
    """Add latency_p99_ratio_to_cloud (tier p99 / the cloud reference's p99) to each row and its run."""
    cloud = next(row for row in rows if row["tier"] == cloud_tier)["latency_p99_ms"]
    for row in rows:
        log_row_metrics(row, {"latency_p99_ratio_to_cloud": row["latency_p99_ms"] / cloud})
    return rows


# No retries: a retry after a partial failure would register a second version.
@task(name="register deploy fit", cache_policy=NO_CACHE, task_run_name="register {row[tier]}")
def register_deploy_fit_task(run_id: str, fitted: FittedTier, data: ServingData, folder: Path, row: dict,
                             pipeline_run_id: str, teacher: bool, name: str, data_hash: str) -> str:
    """Register the tier refit on all data: its ONNX as a version of registered model `name`, and
    its bundle files (unsigned: whoever deploys signs them) as the run's `deploy/` artifacts. The
    version's metric tags are the evaluation fit's (the refit has no held-out data left); tags say so."""
    lay_out(data, fitted.scorer, folder)
    client = mlflow.MlflowClient()
    client.log_artifacts(run_id, str(folder), "deploy")
    version = register_tier(run_id, fitted.scorer.onnx_file, row["tier"], row, pipeline_run_id, teacher, name)
    tags = {"fit": "all data", "trained_until": data.trained_until, "data_hash": data_hash,
            "metrics_from": f"evaluation fit trained until the test cutoff (run {run_id})",
            "serving_artifacts": f"runs:/{run_id}/deploy"}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_tag(run_id, "registered_version", version)
    return version


def pareto_plot(rows: list[dict], path: Path) -> Path:
    """NDCG@10 against p99 latency, marker area growing with peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        ax.scatter(row["latency_p99_ms"], row["ndcg_at_10"], s=40 + 20 * row["peak_memory_mb"], alpha=0.6)
        ax.annotate(row["tier"], (row["latency_p99_ms"], row["ndcg_at_10"]), textcoords="offset points", xytext=(5, 5))
    latencies = [row["latency_p99_ms"] for row in rows]
    if max(latencies) > 10 * min(latencies):  # tiers span orders of magnitude once neural tiers join
        ax.set_xscale("log")
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel("p99 latency of one request (ms)")
    ax.set_ylabel("NDCG@10 (test)")
    ax.set_title("Tiers: quality vs latency (marker size = peak memory)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tier_table(rows: list[dict]) -> pd.DataFrame:
    """TABLE_COLUMNS the rows have (a federated run has no cloud reference), best NDCG@10 first."""
    frame = pd.DataFrame(rows)
    return frame[[c for c in TABLE_COLUMNS if c in frame]].sort_values("ndcg_at_10", ascending=False).reset_index(drop=True)


@task(name="log pipeline summary", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE,
      task_run_name="log pipeline summary")
def log_summary_task(parent_run_id: str, rows: list[dict], params: dict) -> None:
    """Parent run: pipeline params, the tier table (JSON + Markdown) and the Pareto plot."""
    client = mlflow.MlflowClient()
    for key, value in params.items():
        client.log_param(parent_run_id, key, value)
    table = tier_table(rows)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tiers.json").write_text(json.dumps(rows, indent=2, default=str))
        (Path(tmp) / "tiers.md").write_text(table.to_markdown(index=False, floatfmt=".4f"))
        pareto_plot(rows, Path(tmp) / "pareto.png")
        client.log_artifacts(parent_run_id, tmp)

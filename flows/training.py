"""The training pipeline: ingest → validate → features → tiers → evaluate → log.

Runs with or without a Prefect server (`PREFECT_API_URL` unset starts a temporary local one).
A blocking validation failure stops the flow before any training; the parent MLflow run is
then marked FAILED with the report attached, and nothing is registered.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

from lightpersml import config  # noqa: F401  (sets the quiet environment before prefect/mlflow load)

from prefect import flow
from prefect.artifacts import create_table_artifact

from models.metrics import K
from tasks.evaluate import evaluate_task
from tasks.features import features_task
from tasks.ingest import ingest_task
from tasks.tiers import BASELINE_TIERS, fit_tier_task
from tasks.track import finish_run, log_summary_task, log_tier_task, start_parent_run, tier_table
from tasks.validate import validate_task


@flow(name="training", log_prints=True)
def training_flow(data: str = "completejourney", profile: str = "quick") -> dict:
    """Train and evaluate every tier on `data` ("completejourney" or a folder of contract files).

    Returns {"run_id", "experiment_id", "data_hash", "tiers": [row per tier with its metrics]}.
    """
    settings = config.PROFILES[profile]
    dataset = ingest_task(data)
    parent_run_id, experiment_id = start_parent_run(dataset.name, profile, data)
    ok = False
    try:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        report_dir = config.state_dir() / "reports" / dataset.name / stamp
        clean, report = validate_task(dataset, report_dir, config.ValidationSettings(), parent_run_id)
        data_hash = clean.content_hash()
        splits = features_task(clean, data_hash, config.state_dir() / "features", settings.test_weeks,
                               settings.validation_weeks)
        split_info = {f"{name}_cutoff": str(split.cutoff) for name, split in splits.items()}
        split_info |= {"test_users": len(splits["test"].targets), "validation_users": len(splits["validation"].targets)}
        rows = []
        with TemporaryDirectory(dir=config.state_dir()) as artifacts:
            for tier in BASELINE_TIERS:
                fitted = fit_tier_task(tier, splits, settings.tuning_trials, config.state_dir() / "optuna", data_hash)
                artifact = fitted.recommender.save(Path(artifacts) / tier)
                metrics = evaluate_task(artifact, splits["test"], K, settings.latency_requests)
                rows.append(log_tier_task(fitted, artifact, metrics, parent_run_id, data_hash, split_info))
        log_summary_task(parent_run_id, rows, {"data_hash": data_hash, "profile": profile, "source": data, **split_info})
        table = tier_table(rows)
        create_table_artifact(key="tiers", table=table.round(4).to_dict(orient="records"),
                              description=f"Tiers on {dataset.name} (test split, k={K})")
        ok = True
    finally:
        finish_run(parent_run_id, ok)
    return {"run_id": parent_run_id, "experiment_id": experiment_id, "data_hash": data_hash, "tiers": rows,
            "report": report.report_json}


if __name__ == "__main__":
    training_flow()

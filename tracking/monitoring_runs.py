"""Monitoring reports in MLflow: experiment `monitoring`, one run per check of the nodes' data,
each check's value as a metric, breaches as tags, the report as Markdown and JSON."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import mlflow
from monitoring.checks import MonitoringReport, markdown

MLFLOW_EXPERIMENT = "monitoring"


def log_monitoring_report(report: MonitoringReport, dataset: str) -> str:
    """Log `report` as a new run; returns the run id."""
    mlflow.set_experiment(MLFLOW_EXPERIMENT)
    with mlflow.start_run(run_name=f"{dataset} {report.window_end:%Y-%m-%d}") as run:
        mlflow.log_params(
            {
                "dataset": dataset,
                "window_start": str(report.window_start),
                "window_end": str(report.window_end),
                "reference_start": str(report.reference_start),
            }
        )
        mlflow.log_metrics(
            {c.name: c.value for c in report.checks if c.value is not None}
            | {"current_events": report.current_events, "reference_events": report.reference_events}
        )
        mlflow.set_tags(
            {
                "breached": ",".join(c.name for c in report.breached) or "none",
                "retrain": str(bool(report.breached)).lower(),
                "mlflow.note.content": markdown(report),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "monitoring.md").write_text(markdown(report))
            (Path(tmp) / "monitoring.json").write_text(json.dumps(dataclasses.asdict(report), indent=2, default=str))
            mlflow.log_artifacts(tmp)
    return run.info.run_id

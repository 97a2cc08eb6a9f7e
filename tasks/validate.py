"""Validate: run the data contract and publish its report (Prefect artifact, MLflow run)."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from data_contracts.dataset import Dataset
from data_contracts.errors import DataValidationError
from data_contracts.learnability import Protocol
from data_contracts.validation import ValidationReport, validate_dataset
from lightpersml.config import ValidationSettings


def report_markdown(report: ValidationReport) -> str:
    rows = [f"| {f.table} | {f.column or ''} | {f.check} | {'blocking' if f.blocking else 'quarantine'} | {f.unexpected_count if f.unexpected_count is not None else '—'} |"
            for f in report.findings]
    counts = ", ".join(f"{t}: {n:,} rows ({report.quarantined.get(t, 0):,} quarantined)" for t, n in report.row_counts.items())
    return "\n".join([
        f"# Data validation — {report.dataset}: {'passed' if report.passed else 'FAILED'}",
        counts, "",
        "| table | column | check | action | rows |", "|---|---|---|---|---|", *rows,
        "", *(f"- {note}" for note in report.notes),
        "", f"Report: `{report.report_json}`  Data Docs: {report.data_docs}",
    ])


def _publish(report: ValidationReport, out_dir: Path, run_id: str | None) -> None:
    create_markdown_artifact(key="data-validation", markdown=report_markdown(report), description="Data validation report")
    if run_id:
        client = mlflow.MlflowClient()
        client.log_artifacts(run_id, str(out_dir), artifact_path="validation")
        client.log_metric(run_id, "quarantined_rows", sum(report.quarantined.values()))


@task(name="validate", cache_policy=NO_CACHE, task_run_name="validate {dataset.name}")
def validate_task(dataset: Dataset, out_dir: Path, settings: ValidationSettings, protocol: Protocol,
                  run_id: str | None = None) -> tuple[Dataset, ValidationReport]:
    """Blocking failures raise `DataValidationError` after the report is published."""
    try:
        clean, report = validate_dataset(dataset, out_dir, **vars(settings), protocol=protocol)
    except DataValidationError as error:
        if run_id and Path(out_dir).exists():
            mlflow.MlflowClient().log_artifacts(run_id, str(out_dir), artifact_path="validation")
        create_markdown_artifact(key="data-validation", markdown=f"# Data validation FAILED\n\n```\n{error}\n```")
        raise
    _publish(report, out_dir, run_id)
    return clean, report

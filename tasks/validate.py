"""Validate: run the data contract and publish its report (Prefect artifact, MLflow run)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from data_contracts.dataset import Dataset
from data_contracts.errors import DataValidationError
from data_contracts.learnability import Protocol
from data_contracts.validation import ValidationReport, report_markdown, validate_dataset
from lightpersml.config import ValidationSettings
from tracking.runs import log_validation


@task(name="validate", cache_policy=NO_CACHE, task_run_name="validate {dataset.name}")
def validate_task(
    dataset: Dataset, out_dir: Path, settings: ValidationSettings, protocol: Protocol, run_id: str | None = None
) -> tuple[Dataset, ValidationReport]:
    """Blocking failures raise `DataValidationError` after the report is published."""
    try:
        clean, report = validate_dataset(dataset, out_dir, **vars(settings), protocol=protocol)
    except DataValidationError as error:
        if run_id and Path(out_dir).exists():
            log_validation(run_id, out_dir)
        create_markdown_artifact(key="data-validation", markdown=f"# Data validation FAILED\n\n```\n{error}\n```")
        raise
    create_markdown_artifact(
        key="data-validation", markdown=report_markdown(report), description="Data validation report"
    )
    if run_id:
        log_validation(run_id, out_dir, sum(report.quarantined.values()))
    return clean, report

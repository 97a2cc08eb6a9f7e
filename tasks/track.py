"""Prefect tasks over `tracking.runs` (the logic lives there)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.tier_bundle import ServingData
from tracking.registry import CandidateChoice
from tracking.runs import (
    TierRow,
    finish_run,
    log_latency_ratios,
    log_row_metrics,
    log_run_json,
    log_run_params,
    log_summary,
    log_tier,
    register_deploy_fit,
    start_parent_run,
)
from training.tiers import FittedTier


@task(
    name="start pipeline run",
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="start MLflow run: {dataset_name}",
)
def start_parent_run_task(dataset_name: str, profile: str, source: str) -> tuple[str, str]:
    return start_parent_run(dataset_name, profile, source)


@task(
    name="finish pipeline run",
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="finish MLflow run",
)
def finish_run_task(run_id: str, ok: bool) -> None:
    finish_run(run_id, ok)


@task(name="log params", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="log params")
def log_params_task(run_id: str, params: dict) -> None:
    log_run_params(run_id, params)


@task(name="log JSON", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="log {artifact_file}")
def log_json_task(run_id: str, value: dict, artifact_file: str) -> None:
    log_run_json(run_id, value, artifact_file)


@task(
    name="log latency ratios",
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="log p99 / cloud p99",
)
def log_latency_ratios_task(rows: list[TierRow], cloud_tier: str) -> list[TierRow]:
    return log_latency_ratios(rows, cloud_tier)


@task(
    name="log metrics", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="log {row.tier} metrics"
)
def log_row_metrics_task(row: TierRow, metrics: dict[str, float]) -> TierRow:
    """Metrics known after the tier's run was logged; returns the row with them."""
    log_row_metrics(row, metrics)
    return row


# No retries: a retry after a partial failure would add a second child run for the same tier.
@task(name="log tier", cache_policy=NO_CACHE, task_run_name="log {fitted.name}")
def log_tier_task(
    fitted: FittedTier, folder: Path, metrics: dict[str, float], parent_run_id: str, data_hash: str, split_info: dict
) -> TierRow:
    return log_tier(fitted, folder, metrics, parent_run_id, data_hash, split_info)


# No retries: a retry after a partial failure would register a second version.
@task(name="register deploy fit", cache_policy=NO_CACHE, task_run_name="register {row.tier}")
def register_deploy_fit_task(
    fitted: FittedTier,
    data: ServingData,
    folder: Path,
    row: TierRow,
    pipeline_run_id: str,
    teacher: bool,
    name: str,
) -> str:
    return register_deploy_fit(fitted, data, folder, row, pipeline_run_id, teacher, name)


@task(
    name="log pipeline summary",
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="log pipeline summary",
)
def log_summary_task(
    parent_run_id: str,
    rows: list[TierRow],
    params: dict,
    candidate: CandidateChoice | None = None,
    teacher: str | None = None,
) -> None:
    return log_summary(parent_run_id, rows, params, candidate, teacher)

"""Prefect tasks over `nodes.experiments`, `experiments.analysis` and `tracking.experiment_reports`
(the logic lives there)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from experiments.analysis import ExperimentReport
from lightpersml.config import ExperimentSettings
from nodes.experiments import (
    ExperimentUpdate,
    ExposureCollection,
    collect_exposures,
    experiment_definition,
    experiment_report,
    start_experiment,
    stop_experiment,
)
from nodes.fleet import EdgeNode
from tracking.experiment_reports import log_experiment_report


@task(name="start experiment", cache_policy=NO_CACHE, task_run_name="start {name} on {node.name}")
def start_experiment_task(
    node: EdgeNode, archive: bytes, name: str, treatment_share: float, window_hours: float, salt: str
) -> ExperimentUpdate:
    return start_experiment(node, archive, name, treatment_share, window_hours, salt)


@task(name="stop experiment", cache_policy=NO_CACHE, task_run_name="stop the experiment on {node.name}")
def stop_experiment_task(node: EdgeNode, reason: str, promote: bool = False) -> ExperimentUpdate:
    return stop_experiment(node, reason, promote)


@task(
    name="collect exposures",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    task_run_name="collect exposures of {node.name}",
)
def collect_exposures_task(node: EdgeNode, folder: Path) -> ExposureCollection:
    """Retried: a retry continues from the cursor, so it never duplicates."""
    return collect_exposures(node, folder)


@task(name="read experiment", cache_policy=NO_CACHE, task_run_name="read experiment {name}")
def experiment_definition_task(nodes: list[EdgeNode], name: str) -> dict:
    return experiment_definition(nodes, name)


@task(name="analyse experiment", cache_policy=NO_CACHE)
def experiment_report_task(
    folder: Path, events: pd.DataFrame | None, definition: dict, settings: ExperimentSettings
) -> ExperimentReport:
    return experiment_report(folder, events, definition, settings)


@task(name="log experiment report", cache_policy=NO_CACHE, task_run_name="log report of {report.experiment}")
def log_experiment_report_task(report: ExperimentReport, params: dict[str, str]) -> str:
    return log_experiment_report(report, params)

"""Prefect tasks over `monitoring.checks` and `tracking.monitoring_runs` (the logic lives there)."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from lightpersml.config import MonitoringSettings
from monitoring.checks import MonitoringReport, monitor
from tracking.monitoring_runs import log_monitoring_report


@task(name="check the nodes' data", cache_policy=NO_CACHE)
def monitor_task(
    training: pd.DataFrame,
    collected: pd.DataFrame,
    items: pd.DataFrame,
    exposures: pd.DataFrame | None,
    settings: MonitoringSettings,
) -> MonitoringReport:
    return monitor(training, collected, items, exposures, settings)


@task(name="log monitoring report", cache_policy=NO_CACHE)
def log_monitoring_task(report: MonitoringReport, dataset: str) -> str:
    return log_monitoring_report(report, dataset)

"""Monitoring (daily, `prefect.yaml`): collect every node's new events and exposures (exactly
once, as `collect-events` does), compare the latest week with the training data and the served
model's answers with the week before (monitoring.checks), log the report to MLflow and as a
Prefect artifact, and fail the run when a check is breached, recommending a retrain."""

from __future__ import annotations

from lightpersml import config

config.apply_environment()  # before prefect and mlflow load: they read it on import

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.collect import collect_events
from lightpersml.config import MonitoringSettings
from monitoring.checks import MonitoringBreach, MonitoringReport, markdown
from nodes.collect import collected_dir, collected_events
from nodes.experiments import collected_exposures
from nodes.fleet import read_nodes
from nodes.sources import load_dataset
from tasks.experiments import collect_exposures_task
from tasks.monitoring import log_monitoring_task, monitor_task


@flow(name="monitoring", log_prints=True)
def monitoring_flow(
    nodes_file: str, data: str = "completejourney", settings: MonitoringSettings | None = None
) -> MonitoringReport:
    """Check the events of the nodes in `nodes_file` against `data`'s training data; raises
    MonitoringBreach (the run fails) when a check is breached. settings: the thresholds."""
    nodes = read_nodes(Path(nodes_file))
    dataset = load_dataset(data)  # before this run's collection: what the served model could have seen
    folder = collected_dir(config.state_dir(), dataset.name)
    collect_events(nodes, folder, dataset.items)
    for node in nodes:
        collect_exposures_task(node, folder)
    collected = collected_events(config.state_dir(), dataset.name)
    if collected is None:
        raise ValueError(f"no events collected from the nodes of {nodes_file} yet: nothing to monitor")
    report = monitor_task(
        dataset.events, collected, dataset.items, collected_exposures(folder, None), settings or MonitoringSettings()
    )
    log_monitoring_task(report, dataset.name)
    create_markdown_artifact(key="monitoring", markdown=markdown(report), description=f"Monitoring of {dataset.name}")
    for check in report.checks:
        print(f"{check.name}: {check.value} ({check.threshold}){' BREACHED' if check.breached else ''} {check.detail}")
    if report.breached:
        names = ", ".join(c.name for c in report.breached)
        raise MonitoringBreach(
            f"{names} breached: retrain (`lightpersml run --data {data}`) and deploy the new candidate"
        )
    return report

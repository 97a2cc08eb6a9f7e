"""Online experiments: the report of one (`experiment-report`): every node's new events and
exposures collected exactly once, what the treatment's answers earned against the control's
(nodes.experiments, experiments.analysis), logged to MLflow and as a Prefect artifact; and when
the guardrail trips, the treatment stopped on every node. Experiments start with the deploy flow
(`deploy_flow(..., experiment=NAME)`, `lightpersml experiment start`)."""

from __future__ import annotations

from lightpersml import config

config.apply_environment()  # before prefect and mlflow load: they read it on import

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from experiments.analysis import ExperimentReport, markdown
from flows.collect import collect_events
from lightpersml.config import ExperimentSettings
from nodes.collect import collected_dir, collected_events
from nodes.fleet import read_nodes
from nodes.sources import load_items
from tasks.experiments import (
    collect_exposures_task,
    experiment_definition_task,
    experiment_report_task,
    log_experiment_report_task,
    stop_experiment_task,
)


@flow(name="experiment-report", log_prints=True)
def experiment_report_flow(
    nodes_file: str,
    experiment: str,
    data: str = "completejourney",
    enforce_guardrail: bool = True,
    settings: ExperimentSettings | None = None,
) -> ExperimentReport:
    """Report experiment `experiment` of the nodes in `nodes_file` (whose events feed `data`'s
    training data); with `enforce_guardrail`, a clearly worse treatment is stopped on every node.
    settings: the report's thresholds (default: `ExperimentSettings()`)."""
    nodes = read_nodes(Path(nodes_file))
    name, items = load_items(data)
    folder = collected_dir(config.state_dir(), name)
    collect_events(nodes, folder, items)
    for node in nodes:
        collect_exposures_task(node, folder)
    definition = experiment_definition_task(nodes, experiment)
    events = collected_events(config.state_dir(), name)
    report = experiment_report_task(folder, events, definition, settings or ExperimentSettings())
    keys = ("control", "treatment", "control_version", "treatment_version", "salt")
    log_experiment_report_task(report, {k: str(definition[k]) for k in keys} | {"nodes": ",".join(definition["nodes"])})
    create_markdown_artifact(key="experiment-report", markdown=markdown(report), description=f"Experiment {experiment}")
    print(report.verdict)
    if report.guardrail_tripped and enforce_guardrail and definition.get("stopped_at") is None:
        reason = f"guardrail: {report.guardrail_detail}"
        for stopped in [stop_experiment_task.submit(node, reason) for node in nodes]:
            row = stopped.result()
            print(f"{row.node}: {row.status} {row.detail}")
    return report

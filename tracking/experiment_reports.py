"""Online experiment reports in MLflow: experiment `online-experiments`, one run per report, with
each arm's rates and their intervals as metrics, the bundles and share as params, the verdict as
a tag, and the report as Markdown, JSON and a plot of every metric per arm."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import mlflow
from experiments.analysis import ExperimentReport, markdown

MLFLOW_EXPERIMENT = "online-experiments"


def report_plot(report: ExperimentReport, path: Path) -> Path:
    """Each metric's estimate per arm with its 95% interval (one panel per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report.metrics), figsize=(3.2 * len(report.metrics), 3.6))
    for ax, metric in zip(axes, report.metrics):
        arms = [metric.control, metric.treatment]
        ax.errorbar(
            [0, 1],
            [a.estimate for a in arms],
            yerr=[[a.estimate - a.low for a in arms], [a.high - a.estimate for a in arms]],
            fmt="o",
            capsize=6,
            color="black",
        )
        ax.set_xticks([0, 1], ["control", "treatment"])
        ax.set_xlim(-0.5, 1.5)
        ax.set_title(metric.name.replace("_", " "), fontsize=10)
        ax.set_xlabel(
            f"Δ {metric.difference.estimate:+.4f}\n[{metric.difference.low:+.4f}, {metric.difference.high:+.4f}]"
        )
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{report.experiment}: {report.verdict[:90]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_experiment_report(report: ExperimentReport, params: dict[str, str]) -> str:
    """Log `report` as a new run (params: the experiment's bundles, versions, nodes); returns the run id."""
    mlflow.set_experiment(MLFLOW_EXPERIMENT)
    with mlflow.start_run(run_name=report.experiment) as run:
        mlflow.log_params(
            params
            | {
                "experiment": report.experiment,
                "treatment_share": report.treatment_share,
                "window_hours": report.window_hours,
                "primary_metric": report.primary_metric,
            }
        )
        metrics = {"srm_p_value": report.srm_p_value, "mixed_shoppers": report.mixed_shoppers}
        for arm in report.arms:
            metrics |= {f"{arm.arm}_shoppers": arm.shoppers, f"{arm.arm}_exposures": arm.exposures}
        for m in report.metrics:
            for label, interval in (("control", m.control), ("treatment", m.treatment), ("difference", m.difference)):
                metrics |= {
                    f"{m.name}_{label}": interval.estimate,
                    f"{m.name}_{label}_low": interval.low,
                    f"{m.name}_{label}_high": interval.high,
                }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags(
            {
                "verdict": report.verdict[:5000],
                "guardrail_tripped": str(report.guardrail_tripped).lower(),
                "sample_ratio_mismatch": str(report.sample_ratio_mismatch).lower(),
                "mlflow.note.content": markdown(report),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "report.md").write_text(markdown(report))
            (folder / "report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))
            report_plot(report, folder / "metrics_by_arm.png")
            mlflow.log_artifacts(tmp)
    return run.info.run_id

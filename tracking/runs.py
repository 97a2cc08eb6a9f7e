"""MLflow tracking: one experiment per dataset, a parent run per pipeline run, a child run per tier."""

from __future__ import annotations

import json
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import mlflow
from edge import bundle
from lightpersml import config
from models.metrics import METRIC_NAMES
from models.tier_bundle import ServingData, lay_out
from tracking import pyfunc_model
from tracking.pyfunc_model import SIGNATURE
from tracking.registry import register_tier
from training.tiers import BASELINE_TIERS, FittedTier
from training.tuning import TuningSummary

SERVING_METRICS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "peak_memory_mb",
    "model_size_mb",
    "param_count",
)
TIER_METRICS = METRIC_NAMES + SERVING_METRICS
TABLE_COLUMNS = (
    "tier",
    "ndcg_at_10",
    "ndcg_at_10_seed_std",
    "recall_at_10",
    "precision_at_10",
    "hr_at_10",
    "recall_repeat_at_10",
    "recall_explore_at_10",
    "coverage_at_10",
    "latency_p99_ms",
    "latency_p99_ratio_to_cloud",
    "peak_memory_mb",
    "model_size_mb",
    "param_count",
)


@dataclass
class TierRow:
    """One tier's child run of a pipeline run and the metrics logged on it.

    metrics: MLflow metric name → value, as logged on the run: quality @10 on the test split (0–1),
    latencies in ms, memory and sizes in MiB, seconds, counts.
    """

    tier: str
    run_id: str
    metrics: dict[str, float]

    @property
    def ndcg_at_10(self) -> float:
        """NDCG@10 on the test split, served through the edge engine (0–1)."""
        return self.metrics["ndcg_at_10"]

    @property
    def latency_p99_ms(self) -> float:
        """p99 latency of one request through the edge engine (ms)."""
        return self.metrics["latency_p99_ms"]

    @property
    def model_size_mb(self) -> float:
        """The tier's ranker file, or a baseline's candidate state (MiB; `model_size_mb`)."""
        return self.metrics["model_size_mb"]

    def add_metrics(self, metrics: dict[str, float]) -> None:
        """Metrics known only after the run was logged (the caller logs them on the run)."""
        self.metrics |= metrics

    def record(self) -> dict:
        """tier, run_id and every metric as one flat dict: a row of a table or of tiers.json."""
        return {"tier": self.tier, "run_id": self.run_id, **self.metrics}


def git_sha() -> str:
    """The project's commit (with `-dirty` for uncommitted changes), or "unknown" outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


EXPERIMENT_DESCRIPTION = (
    "LightPersML pipeline runs on **{dataset}**. Each `training-…` run is one pipeline run; its child runs are the "
    "tiers (baselines, teacher, distilled students), each measured by serving its signed edge bundle through the "
    "node's engine on the test split (every shopper's first basket after the test cutoff, asked at that basket's "
    "store and start time). Compare tiers with the chart view or the parent run's `pareto.png`; promote a registered version with "
    "`lightpersml promote`."
)


TIER_DESCRIPTIONS = {
    "g_topfreq": "Baseline G-TopFreq: the store's best sellers in stock, the same for every shopper.",
    "p_topfreq": 'Baseline P-TopFreq ("buy again"): the shopper\'s own items by baskets with them, then the '
    "store's best sellers.",
    "tifu_knn": "Baseline TIFU-KNN (tuned on validation): the shopper's time-decayed basket vector mixed with their "
    "nearest shoppers'.",
    "full": "Teacher: LightGBM LambdaRank over each shopper's candidates (tuned on validation), ONNX tree ensemble.",
    "full_native": "The teacher's bundle served by LightGBM itself: the cloud latency reference, not deployable.",
    "balanced": "Student distilled from the teacher, int8 ONNX (mid size).",
    "edge": "Student distilled from the teacher, int8 ONNX, sized for edge nodes.",
    "federated": "Edge-sized ranker trained across store groups with differential privacy, int8 ONNX.",
}
REGISTERED_MODEL_DESCRIPTION = (
    "Every tier of {name} that can run on an edge node: one version per tier per pipeline run (tag `tier`). The "
    "pipeline points alias `candidate` at the best version of its run that passes the gates (tag `gate_results` on "
    "each version says why or why not); a person promotes one to alias `edge` with `lightpersml promote VERSION`, "
    "and `lightpersml deploy` ships the version behind `edge` to the nodes."
)
EVALUATION_NOTE = (
    " Metrics: its signed bundle answering every test shopper at their basket's store and time through the "
    "node's engine; latency and peak RSS from a fresh process serving the same bundle."
)


def experiment_id(dataset_name: str) -> str:
    """The experiment `lightpersml-<dataset>`, created with its artifacts under mlflow/artifacts/."""
    name = f"lightpersml-{dataset_name}"
    tags = {
        "mlflow.experimentKind": "custom_model_development",  # the UI opens it as model training, not GenAI
        "mlflow.note.content": EXPERIMENT_DESCRIPTION.format(dataset=dataset_name),
    }
    found = mlflow.get_experiment_by_name(name)
    if found:
        for key, value in tags.items():
            if key not in found.tags:  # an experiment made by an older version
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=f"{config.mlflow_artifact_root()}/{name}", tags=tags)


def start_parent_run(dataset_name: str, profile: str, source: str) -> tuple[str, str]:
    """Create the pipeline's parent run; returns (run_id, experiment_id)."""
    experiment = experiment_id(dataset_name)
    run = mlflow.MlflowClient().create_run(
        experiment,
        run_name=f"training-{profile}",
        tags={"git_sha": git_sha(), "dataset": dataset_name, "profile": profile, "source": source, "kind": "pipeline"},
    )
    return run.info.run_id, experiment


UI_PORT = 5000  # `lightpersml ui`'s default


def run_url(experiment: str, run_id: str, port: int = UI_PORT) -> str:
    """The run's page in the MLflow UI that `lightpersml ui` serves, in its model-training view (the
    UI opens in its GenAI view unless the link asks)."""
    return f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


def run_link(experiment: str, run_id: str) -> str:
    """Markdown link to the run (`run_url`)."""
    return f"[MLflow run {run_id}]({run_url(experiment, run_id)}) (`lightpersml ui`)"


def log_validation(run_id: str, report_dir: Path, quarantined_rows: int | None = None) -> None:
    """The validation report folder as the run's `validation/` artifacts, and the quarantined row count."""
    client = mlflow.MlflowClient()
    client.log_artifacts(run_id, str(report_dir), artifact_path="validation")
    if quarantined_rows is not None:
        client.log_metric(run_id, "quarantined_rows", quarantined_rows)


def log_run_params(run_id: str, params: dict) -> None:
    mlflow.MlflowClient().log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])


def log_run_json(run_id: str, value: dict, artifact_file: str) -> None:
    mlflow.MlflowClient().log_dict(run_id, value, artifact_file)


def finish_run(run_id: str, ok: bool) -> None:
    mlflow.MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def model_size_mb(folder: Path) -> float:
    """What a tier adds to the shared candidate state: its ranker file (model.onnx), or for a
    baseline with no model the candidate state it scores from (candidates.npz)."""
    model = folder / bundle.MODEL
    return (model if model.exists() else folder / bundle.CANDIDATES).stat().st_size / 2**20


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**20


def log_row_metrics(row: TierRow, metrics: dict[str, float]) -> None:
    """Add metrics known only after a tier's run was logged to its row and its run."""
    row.add_metrics(metrics)
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.log_metric(row.run_id, key, float(value))


def log_latency_ratios(rows: list[TierRow], cloud_tier: str) -> list[TierRow]:
    """Add latency_p99_ratio_to_cloud (tier p99 / the cloud reference's p99) to each row and its run."""
    cloud = next(row for row in rows if row.tier == cloud_tier).latency_p99_ms
    for row in rows:
        log_row_metrics(row, {"latency_p99_ratio_to_cloud": row.latency_p99_ms / cloud})
    return rows


def pareto_frontier(rows: list[TierRow]) -> list[TierRow]:
    """The rows no other row beats on both NDCG@10 (higher) and p99 latency (lower), fastest first."""
    frontier, best = [], -1.0
    for row in sorted(rows, key=lambda r: (r.latency_p99_ms, -r.ndcg_at_10)):
        if row.ndcg_at_10 > best:
            frontier.append(row)
            best = row.ndcg_at_10
    return frontier


def pareto_plot(
    rows: list[TierRow],
    path: Path,
    gates: config.Gates | None = None,
    teacher: str | None = None,
    candidate: str | None = None,
) -> Path:
    """NDCG@10 against p99 latency: marker area by model file size, baselines as squares, the Pareto
    frontier, the gates (p99 maximum; NDCG minimum as a share of the `teacher` row's), and the
    `candidate` tier ringed. Labels are placed so they never overprint (adjustText)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from adjustText import adjust_text

    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.get_cmap("tab10")
    sizes = [row.model_size_mb for row in rows]
    biggest = max(max(sizes), 1e-6)
    texts = []
    for j, row in enumerate(rows):
        x, y = row.latency_p99_ms, row.ndcg_at_10
        baseline = row.tier in BASELINE_TIERS
        area = 60 + 900 * (sizes[j] / biggest) ** 0.5
        ax.scatter(
            x,
            y,
            s=area,
            marker="s" if baseline else "o",
            color=colors(j % 10),
            alpha=0.7,
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
        )
        if row.tier == candidate:
            ax.scatter(x, y, s=area + 400, facecolors="none", edgecolors="crimson", linewidths=2, zorder=4)
        label = f"{row.tier}\n{y:.3f} · {x:.1f} ms · {sizes[j]:.2g} MB"
        texts.append(ax.text(x, y, label + ("  ← candidate" if row.tier == candidate else ""), fontsize=8))
    frontier = pareto_frontier(rows)
    ax.step(
        [r.latency_p99_ms for r in frontier],
        [r.ndcg_at_10 for r in frontier],
        where="post",
        color="grey",
        linestyle="--",
        linewidth=1,
        label="Pareto frontier",
        zorder=2,
    )
    if gates is not None:
        ax.axvline(
            gates.max_latency_p99_ms,
            color="crimson",
            linestyle=":",
            linewidth=1,
            label=f"gate: p99 ≤ {gates.max_latency_p99_ms:g} ms",
        )
        reference = next((r for r in rows if r.tier == teacher), None)
        if reference is not None:
            floor = gates.min_ndcg_ratio_to_teacher * reference.ndcg_at_10
            ax.axhline(
                floor,
                color="darkorange",
                linestyle=":",
                linewidth=1,
                label=f"gate: NDCG ≥ {gates.min_ndcg_ratio_to_teacher:.0%} of {teacher} ({floor:.3f})",
            )
    latencies = [row.latency_p99_ms for row in rows]
    if max(latencies) > 10 * min(latencies):
        ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("p99 latency of one request through the edge engine (ms)")
    ax.set_ylabel("NDCG@10 on the test split")
    ax.set_title("Tiers: quality vs latency (area = model file size; squares = baselines)")
    ax.legend(loc="lower right", fontsize=8)
    adjust_text(texts, ax=ax, arrowprops=dict(arrowstyle="-", color="grey", lw=0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def tier_table(rows: list[TierRow]) -> pd.DataFrame:
    """TABLE_COLUMNS the rows have (a federated run has no cloud reference), best NDCG@10 first."""
    frame = pd.DataFrame([row.record() for row in rows])
    return (
        frame[[c for c in TABLE_COLUMNS if c in frame]]
        .sort_values("ndcg_at_10", ascending=False)
        .reset_index(drop=True)
    )


def tuning_params(tuning: TuningSummary | None) -> dict:
    """The study's name as a param; its numbers are metrics (`tuning_metrics`), never both."""
    return {} if tuning is None else {"tuning_study": tuning.study}


def tuning_metrics(tuning: TuningSummary | None) -> dict[str, float]:
    """Trials, the best validation NDCG@10 and the teacher's best round count (seconds are `tuning_seconds`)."""
    if tuning is None:
        return {}
    best_rounds = {} if tuning.best_rounds is None else {"tuning_best_rounds": float(tuning.best_rounds)}
    return {
        "tuning_trials": float(tuning.trials),
        "best_validation_ndcg_at_10": tuning.best_validation_ndcg_at_10,
        **best_rounds,
    }


def log_tier(
    fitted: FittedTier, folder: Path, metrics: dict[str, float], parent_run_id: str, data_hash: str, split_info: dict
) -> TierRow:
    """One child run: params, every metric name of DESIGN.md, tags, and the tier's signed bundle as
    the pyfunc model `model` (answered by the node's engine)."""
    parent = mlflow.get_run(parent_run_id)
    metrics = {
        **metrics,
        "model_size_mb": model_size_mb(folder),
        "param_count": fitted.param_count,
        "bundle_size_mb": folder_size_mb(folder),
        "fit_seconds": fitted.fit_seconds,
        "tuning_seconds": fitted.tuning_seconds,
    }
    missing = [m for m in TIER_METRICS if m not in metrics]
    if missing:
        raise ValueError(f"tier {fitted.name} lacks metrics {missing}")
    tags = {
        "tier": fitted.name,
        "data_hash": data_hash,
        "git_sha": git_sha(),
        "fit": "evaluation",
        "runtime": fitted.runtime,
        "mlflow.note.content": TIER_DESCRIPTIONS.get(fitted.name, fitted.name) + EVALUATION_NOTE,
    }
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id, run_name=fitted.name, parent_run_id=parent_run_id, tags=tags
    ) as run:
        mlflow.log_params({**fitted.params, **split_info, **tuning_params(fitted.tuning)})
        mlflow.log_metrics(
            {k: float(v) for k, v in {**metrics, **tuning_metrics(fitted.tuning)}.items() if v is not None}
        )
        if fitted.runtime == "onnx":  # the cloud reference serves the teacher's bundle, logged with the teacher
            with warnings.catch_warnings():  # the explicit signature makes an input example unnecessary
                warnings.filterwarnings("ignore", message=".*An input example was not provided")
                mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(Path(pyfunc_model.__file__)),
                    signature=SIGNATURE,
                    artifacts={"bundle": str(folder)},
                    pip_requirements=["lightpersml"],
                )
    return TierRow(fitted.name, run.info.run_id, metrics)


def register_deploy_fit(
    fitted: FittedTier,
    data: ServingData,
    folder: Path,
    row: TierRow,
    pipeline_run_id: str,
    teacher: bool,
    name: str,
) -> str:
    """Register the tier refit on all data: its ONNX as a version of registered model `name`, and
    its bundle files (unsigned: whoever deploys signs them) as the artifacts `deploy/` of the
    evaluation fit's run `row.run_id`. The version's metric tags are the evaluation fit's (the
    refit has no held-out data left); tags say so."""
    run_id = row.run_id
    lay_out(data, fitted.scorer, folder)
    client = mlflow.MlflowClient()
    client.log_artifacts(run_id, str(folder), "deploy")
    version = register_tier(run_id, fitted.scorer.onnx_file, row.tier, row.metrics, pipeline_run_id, teacher, name)
    tags = {
        "fit": "all data",
        "trained_until": data.trained_until,
        "data_hash": data.data_hash,
        "metrics_from": f"evaluation fit trained until the test cutoff (run {run_id})",
        "serving_artifacts": f"runs:/{run_id}/deploy",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(
        name,
        version,
        description=(
            f"{TIER_DESCRIPTIONS.get(row.tier, row.tier)} Refit on all data until {data.trained_until}: what a "
            f"node serves (`lightpersml bundle --version {version}`). Metrics and gate results are those of its "
            f"evaluation fit (run {run_id}), served through the edge engine on the test split."
        ),
    )
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=REGISTERED_MODEL_DESCRIPTION.format(name=name))
    client.set_tag(run_id, "registered_version", version)
    return version


def log_summary(
    parent_run_id: str, rows: list[TierRow], params: dict, candidate=None, teacher: str | None = None
) -> None:
    """Parent run: pipeline params, the tier table (JSON + Markdown), the Pareto plot, and a
    description with the best tier, the candidate and every version's gate results.
    candidate: the run's `CandidateChoice` (None: no versions, e.g. a run that registers nothing)."""
    client = mlflow.MlflowClient()
    for key, value in params.items():
        client.log_param(parent_run_id, key, value)
    table = tier_table(rows)
    gates = candidate.gates if candidate is not None else None
    candidate_tier = candidate.tier if candidate is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tiers.json").write_text(json.dumps([row.record() for row in rows], indent=2, default=str))
        (Path(tmp) / "tiers.md").write_text(table.to_markdown(index=False, floatfmt=".4f"))
        pareto_plot(rows, Path(tmp) / "pareto.png", gates, teacher, candidate_tier)
        client.log_artifacts(parent_run_id, tmp)
    best = table.iloc[0]
    description = [
        f"Best tier on the test split: **{best['tier']}** (NDCG@10 {best['ndcg_at_10']:.4f}, "
        f"p99 {best['latency_p99_ms']:.1f} ms).",
        "",
    ]
    if candidate is not None:
        description += [candidate.markdown(), ""]
    columns = [
        c
        for c in ("tier", "ndcg_at_10", "recall_at_10", "latency_p99_ms", "peak_memory_mb", "model_size_mb")
        if c in table
    ]
    description.append(table[columns].to_markdown(index=False, floatfmt=".4f"))
    client.set_tag(parent_run_id, "mlflow.note.content", "\n".join(description))

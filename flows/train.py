"""The training pipeline: ingest → validate → features → baselines → tune the teacher → train and
distil → export → evaluate → log → refit on all data → register → move alias `candidate`.

Runs with or without a Prefect server (`PREFECT_API_URL` unset starts a temporary local one).
A blocking validation failure stops the flow before any training; the parent MLflow run is
then marked FAILED with the report attached, and nothing is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from lightpersml import config

config.apply_environment()  # before prefect and mlflow load: they read it on import

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evaluation.served import Served, seed_spread, tier_bundle, top_k_overlap
from models.metrics import K
from models.tier_bundle import ServingData
from splits.temporal import Split
from tasks.evaluate import bundle_ndcg_task, evaluate_task, seed_ndcgs_task
from tasks.features import features_task
from tasks.ingest import ingest_task
from tasks.register import update_candidate_task
from tasks.tiers import export_rankers_task, fit_rankers_task, serving_data_task, tune_tifu_task
from tasks.track import (
    finish_run_task,
    log_latency_ratios_task,
    log_row_metrics_task,
    log_summary_task,
    log_tier_task,
    register_deploy_fit_task,
    start_parent_run_task,
)
from tasks.train import ranker_data_task
from tasks.tune import tune_ranker_task
from tasks.validate import validate_task
from tracking.registry import CandidateChoice
from tracking.runs import TierRow, run_link, tier_table
from training.tiers import (
    CLOUD_TIER,
    REGISTERED_TIERS,
    STUDENT_TIERS,
    TEACHER_TIER,
    FittedTier,
    TunedTifu,
    baseline_tiers,
)


def evaluate_and_log(
    fitted: FittedTier,
    data: ServingData,
    folder: Path,
    split: Split,
    latency_requests: int,
    parent_run_id: str,
    split_info: dict,
    extra: dict | None = None,
) -> tuple[TierRow, Served]:
    """Sign the tier's bundle, serve the split through the engine, log its child run.
    Returns (row, what it served)."""
    target = tier_bundle(fitted, data, folder)
    served = evaluate_task(fitted.name, target, split, K, latency_requests, fitted.runtime)
    row = log_tier_task(fitted, target, served.metrics | (extra or {}), parent_run_id, data.data_hash, split_info)
    return row, served


def baselines(
    evaluation_data: ServingData,
    tifu: TunedTifu,
    fit_seconds: float,
    folder: Path,
    test,
    settings,
    parent_run_id: str,
    split_info: dict,
) -> list[TierRow]:
    """Serve and log every baseline tier (deterministic: one fit each)."""
    rows = []
    for fitted in baseline_tiers(evaluation_data, tifu, fit_seconds):
        row, _ = evaluate_and_log(
            fitted,
            evaluation_data,
            folder / "bundles",
            test,
            settings.latency_requests,
            parent_run_id,
            split_info,
        )
        rows.append(log_row_metrics_task(row, seed_spread([row.ndcg_at_10])))
    return rows


def neural_tiers(
    splits: dict,
    evaluation_data: ServingData,
    tifu: TunedTifu,
    settings: config.Profile,
    folder: Path,
    parent_run_id: str,
    split_info: dict,
    items: pd.DataFrame,
    model_name: str,
) -> list[TierRow]:
    """Tune the teacher, fit and distil for evaluation, serve and log every neural tier (with its
    seed spread), then refit on all data and register the refit ONNX models under `model_name`."""
    generator, data_hash = tifu.generator_settings(), evaluation_data.data_hash
    validation, test = splits["validation"], splits["test"]
    tuning_data = ranker_data_task(validation, settings.tuning_weeks, generator, with_validation=True)
    study_name = f"lambdarank-{data_hash}-{validation.cutoff:%Y%m%d}-w{settings.tuning_weeks}-r{settings.max_rounds}"
    teacher_spec, tuning = tune_ranker_task(
        tuning_data, settings, config.state_dir() / "optuna" / "optuna.db", study_name, parent_run_id
    )
    del tuning_data
    training = ranker_data_task(test, settings.training_weeks, generator, generator=evaluation_data.generator)
    tiers = export_rankers_task(
        fit_rankers_task(training, teacher_spec, settings.student_epochs), folder / "evaluation", tifu.exclude_seen
    )
    tiers[TEACHER_TIER].tuning_seconds, tiers[TEACHER_TIER].tuning = tuning.seconds, tuning
    rows, served = {}, {}
    for tier in (TEACHER_TIER, CLOUD_TIER, *STUDENT_TIERS):
        extra = {}
        if tier in STUDENT_TIERS:  # what quantization costs, measured on the same test requests
            extra["fp32_ndcg_at_10"] = bundle_ndcg_task(
                tiers[f"fp32/{tier}"], evaluation_data, folder / "bundles", test
            )
        rows[tier], served[tier] = evaluate_and_log(
            tiers[tier],
            evaluation_data,
            folder / "bundles",
            test,
            settings.latency_requests,
            parent_run_id,
            split_info,
            extra,
        )
    # The exported teacher must rank like LightGBM itself on the real test requests.
    overlap = top_k_overlap(served[TEACHER_TIER].recommendations, served[CLOUD_TIER].recommendations)
    rows[CLOUD_TIER] = log_row_metrics_task(rows[CLOUD_TIER], {"onnx_native_top10_overlap": overlap})
    trained = (TEACHER_TIER, *STUDENT_TIERS)
    ndcgs = seed_ndcgs_task(
        training,
        teacher_spec,
        settings.student_epochs,
        range(1, settings.seeds),
        trained,
        evaluation_data,
        test,
        folder / "seeds",
        tifu.exclude_seen,
    )
    del training
    for tier in (*trained, CLOUD_TIER):  # the cloud reference serves the teacher's models
        trained_as = TEACHER_TIER if tier == CLOUD_TIER else tier
        rows[tier] = log_row_metrics_task(rows[tier], seed_spread([rows[trained_as].ndcg_at_10, *ndcgs[trained_as]]))
    deploy_data, _ = serving_data_task(splits["deploy"], generator, items, tifu.exclude_seen, data_hash)
    refit = fit_rankers_task(
        ranker_data_task(splits["deploy"], settings.training_weeks, generator, generator=deploy_data.generator),
        teacher_spec,
        settings.student_epochs,
    )
    deployable = export_rankers_task(refit, folder / "deploy", tifu.exclude_seen)
    for tier in REGISTERED_TIERS:
        register_deploy_fit_task(
            deployable[tier],
            deploy_data,
            folder / "deploy-bundles" / tier,
            rows[tier],
            parent_run_id,
            teacher=tier == TEACHER_TIER,
            name=model_name,
        )
    return list(rows.values())


@dataclass(frozen=True)
class PipelineRun:
    """What one training pipeline run produced."""

    run_id: str  # the parent MLflow run
    experiment_id: str  # the dataset's MLflow experiment
    data_hash: str  # content hash of the validated data
    tiers: list[TierRow]  # every tier's child run and its metrics on the test split
    validation_report: str  # path of the validation report (report.json)
    candidate: CandidateChoice  # where alias `candidate` points after the run, and why


def run_name() -> str:
    """The flow run's name: profile, data and start time (UTC)."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    data = Path(str(parameters.get("data", "completejourney"))).name
    return f"training {parameters.get('profile', 'quick')} on {data}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


@flow(name="training", log_prints=True, flow_run_name=run_name)
def training_flow(
    data: str = "completejourney",
    profile: str = "quick",
    event_types: dict[str, str] | None = None,
    max_bad_share: float | None = None,
    holdout_order: str = "time",
    discovery_candidates: int = 0,
) -> PipelineRun:
    """Train and evaluate every tier on `data` ("completejourney" or a folder of contract files).
    event_types: the shop's event types → contract types (e.g. {"rating": "purchase"});
    max_bad_share: the validation threshold per check (default `ValidationSettings`);
    holdout_order: on data where nobody rebuys (the holdout protocol), hold out each shopper's
    newest lines ("time") or random ones ("random"); discovery_candidates: on grocery, EASE's best
    new items per shopper among the candidates, for a node's discovery slots (0: none).
    """
    settings = config.PROFILES[profile]
    dataset = ingest_task(data)
    parent_run_id, experiment_id = start_parent_run_task(dataset.name, profile, data)
    model_name = config.registered_model(dataset.name)
    ok = False
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report_dir = config.state_dir() / "reports" / dataset.name / stamp
        validation = config.ValidationSettings(
            event_types=tuple((event_types or {}).items()),
            **({} if max_bad_share is None else {"max_bad_share": max_bad_share}),
        )
        protocol = config.protocol(settings, holdout_order)
        clean, report = validate_task(dataset, report_dir, validation, protocol, parent_run_id)
        data_hash = clean.content_hash()
        splits = features_task(clean, data_hash, config.state_dir() / "features", protocol)
        split_info = {f"{name}_cutoff": str(split.cutoff) for name, split in splits.items()}
        split_info |= {
            "protocol": splits["test"].protocol,
            **({"holdout_order": splits["test"].holdout_order} if splits["test"].protocol == "holdout" else {}),
            "test_users": len(splits["test"].targets),
            "validation_users": len(splits["validation"].targets),
        }
        with TemporaryDirectory(dir=config.state_dir()) as tmp:
            tifu = tune_tifu_task(
                splits["validation"],
                settings.tuning_trials,
                config.state_dir() / "optuna",
                data_hash,
                discovery_candidates,
            )
            split_info["discovery_candidates"] = tifu.generator_settings()["n_discovery"]
            evaluation_data, fit_seconds = serving_data_task(
                splits["test"],
                tifu.generator_settings(),
                clean.items,
                tifu.exclude_seen,
                data_hash,
            )
            rows = baselines(
                evaluation_data,
                tifu,
                fit_seconds,
                Path(tmp),
                splits["test"],
                settings,
                parent_run_id,
                split_info,
            )
            rows += neural_tiers(
                splits,
                evaluation_data,
                tifu,
                settings,
                Path(tmp),
                parent_run_id,
                split_info,
                clean.items,
                model_name,
            )
        candidate = update_candidate_task(parent_run_id, config.Gates(), model_name)
        create_markdown_artifact(
            key="candidate",
            markdown=f"{candidate.markdown()}\n{run_link(experiment_id, parent_run_id)}",
            description=f"Alias candidate after this run (MLflow run {parent_run_id})",
        )
        rows = log_latency_ratios_task(rows, CLOUD_TIER)
        log_summary_task(
            parent_run_id,
            rows,
            {"data_hash": data_hash, "profile": profile, "source": data, **split_info},
            candidate,
            TEACHER_TIER,
        )
        table = tier_table(rows)
        create_table_artifact(
            key="tiers",
            table=table.round(4).to_dict(orient="records"),
            description=f"Tiers on {dataset.name} (test split, k={K}), served through the edge "
            f"engine; {run_link(experiment_id, parent_run_id)}",
        )
        ok = True
    finally:
        finish_run_task(parent_run_id, ok)
    return PipelineRun(
        run_id=parent_run_id,
        experiment_id=experiment_id,
        data_hash=data_hash,
        tiers=rows,
        validation_report=report.report_json,
        candidate=candidate,
    )


if __name__ == "__main__":
    training_flow()

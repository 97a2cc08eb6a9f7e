"""Federated training across store groups: validate → features → federated training until the
test cutoff (Flower simulation; DP-SGD at every node; robust aggregation) → export int8 →
evaluate and log the `federated` tier beside the others → federated refit on all data →
register it (promotable to the edge like any version).

Per round, the server logs validation NDCG@10, ε, δ and the bytes each node sent to this
pipeline's parent MLflow run. A failed run registers nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from lightpersml import config

config.apply_environment()  # before prefect and mlflow load: they read it on import

from prefect import flow

from evaluation.served import tier_bundle
from federated.summary import FederatedSummary
from federated.task import TIFU_PARAMS, FederatedSettings
from models.metrics import K
from tasks.evaluate import evaluate_task
from tasks.features import features_task
from tasks.federated_training import federate_task
from tasks.ingest import ingest_task
from tasks.register import tag_federated_version_task
from tasks.tiers import export_neural_task, serving_data_task
from tasks.track import (
    finish_run_task,
    log_json_task,
    log_params_task,
    log_tier_task,
    register_deploy_fit_task,
    start_parent_run_task,
)
from tasks.validate import validate_task
from tracking.runs import TierRow
from training.data import RankerSpec, generator_settings
from training.distill import STUDENTS
from training.tiers import exclude_seen_items

FEDERATED_TIER = "federated"


@dataclass(frozen=True)
class FederatedRun:
    """What one federated pipeline run produced."""

    run_id: str  # the parent MLflow run
    experiment_id: str  # the dataset's MLflow experiment
    tier: TierRow  # the `federated` tier's child run and its metrics on the test split
    version: str | None  # the registered version of the refit; None with refit=False
    evaluation_summary: FederatedSummary  # the evaluation fit's rounds, ε, δ (federated/test-fit.json)
    deploy_summary: FederatedSummary | None  # the refit's (federated/deploy-fit.json); None with refit=False


@flow(name="federated-training", log_prints=True)
def federated_flow(
    data: str = "completejourney",
    nodes: int = 8,
    rounds: int = 10,
    target_epsilon: float = 8.0,
    aggregation: str = "fedavg",
    noise_multiplier: float = 2.0,
    local_epochs: int = 1,
    refit: bool = True,
) -> FederatedRun:
    """Train the `federated` tier on `data` split into `nodes` store groups (splits.partition).

    noise_multiplier 0 trains without differential privacy (target_epsilon is then ignored).
    refit=False logs the evaluation fit and registers nothing.
    """
    settings = config.PROFILES["quick"]
    dataset = ingest_task(data)
    parent_run_id, experiment_id = start_parent_run_task(dataset.name, "federated", data)
    model_name = config.registered_model(dataset.name)
    ok, version, deploy_summary = False, None, None
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        clean, _ = validate_task(
            dataset,
            config.state_dir() / "reports" / dataset.name / stamp,
            config.ValidationSettings(),
            config.protocol(settings),
            parent_run_id,
        )
        data_hash = clean.content_hash()
        splits = features_task(clean, data_hash, config.state_dir() / "features", config.protocol(settings))
        federated = FederatedSettings(
            data=data,
            num_server_rounds=rounds,
            aggregation=aggregation,
            noise_multiplier=noise_multiplier,
            target_epsilon=target_epsilon if noise_multiplier else 0.0,
            local_epochs=local_epochs,
            mlflow_run_id=parent_run_id,
        )
        logged = {k: v for k, v in federated.to_run_config().items() if k not in ("data", "mlflow-run-id")}
        log_params_task(parent_run_id, {"nodes": nodes, **logged})
        split_info = {f"{name}_cutoff": str(split.cutoff) for name, split in splits.items()}
        exclude_seen = exclude_seen_items(splits["validation"])
        generator = generator_settings(TIFU_PARAMS)
        architecture = {**STUDENTS["edge"]["architecture"], "log_features": federated.private}
        lr = federated.private_lr if federated.private else federated.lr
        spec = RankerSpec(architecture, lr, 0.0, epochs=rounds * local_epochs)
        with TemporaryDirectory(dir=config.state_dir()) as tmp:
            tmp = Path(tmp)
            result = federate_task(replace(federated, split="test"), nodes, tmp / "evaluation.pt", target_epsilon)
            log_json_task(parent_run_id, asdict(result.summary), "federated/test-fit.json")
            privacy = {
                "epsilon": result.summary.epsilon,
                "delta": result.summary.delta,
                "federated_rounds": result.summary.rounds_trained,
                "bytes_per_node_per_round": result.summary.bytes_per_node,
            }
            # Serving needs the central candidate generator fitted at the cutoff.
            evaluation_data, _ = serving_data_task(splits["test"], generator, clean.items, exclude_seen, data_hash)
            fitted = export_neural_task(
                FEDERATED_TIER, result.model, spec, result.seconds, tmp / "evaluation", exclude_seen
            )[FEDERATED_TIER]
            fitted.params |= {"nodes": nodes}
            bundle = tier_bundle(fitted, evaluation_data, tmp / "bundles")
            served = evaluate_task(FEDERATED_TIER, bundle, splits["test"], K, settings.latency_requests, fitted.runtime)
            row = log_tier_task(fitted, bundle, served.metrics | privacy, parent_run_id, data_hash, split_info)
            if refit:
                deploy = splits["deploy"]
                refitted = federate_task(replace(federated, split="deploy"), nodes, tmp / "deploy.pt", target_epsilon)
                log_json_task(parent_run_id, asdict(refitted.summary), "federated/deploy-fit.json")
                deploy_summary = refitted.summary
                deploy_data, _ = serving_data_task(deploy, generator, clean.items, exclude_seen, data_hash)
                deployable = export_neural_task(
                    FEDERATED_TIER, refitted.model, spec, refitted.seconds, tmp / "deploy", exclude_seen
                )[FEDERATED_TIER]
                version = register_deploy_fit_task(
                    deployable,
                    deploy_data,
                    tmp / "deploy-bundle",
                    row,
                    parent_run_id,
                    teacher=False,
                    name=model_name,
                )
                tag_federated_version_task(
                    model_name, version, refitted.summary.epsilon, refitted.summary.delta, data_hash
                )
        ok = True
    finally:
        finish_run_task(parent_run_id, ok)
    return FederatedRun(
        run_id=parent_run_id,
        experiment_id=experiment_id,
        tier=row,
        version=version,
        evaluation_summary=result.summary,
        deploy_summary=deploy_summary,
    )


if __name__ == "__main__":
    federated_flow()

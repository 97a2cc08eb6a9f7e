"""Prefect tasks over `evaluation.served` (the logic lives there)."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from evaluation.served import Served, bundle_ndcg, measure_serving, seed_ndcgs, serve_and_score
from models.tier_bundle import ServingData
from splits.temporal import Split
from training.boosted import BoostedSpec
from training.data import RankerData
from training.tiers import FittedTier

log = logging.getLogger(__name__)


@task(name="evaluate tier", cache_policy=NO_CACHE, task_run_name="evaluate {tier}")
def evaluate_task(
    tier: str, folder: Path, split: Split, k: int, latency_requests: int, runtime: str = "onnx"
) -> Served:
    """Metrics and serving costs of the tier's signed bundle, served by the node's engine."""
    served = serve_and_score(folder, split, k, runtime)
    served.metrics |= measure_serving(folder, split, latency_requests, k, runtime)
    log.info(
        "%s through the engine: NDCG@10 %.4f, p99 %.2f ms, peak RSS %.0f MB",
        tier,
        served.metrics["ndcg_at_10"],
        served.metrics["latency_p99_ms"],
        served.metrics["peak_memory_mb"],
    )
    return served


@task(name="score bundle", cache_policy=NO_CACHE, task_run_name="score {fitted.name} bundle")
def bundle_ndcg_task(fitted: FittedTier, data: ServingData, folder: Path, split: Split) -> float:
    return bundle_ndcg(fitted, data, folder, split)


@task(name="seed spread", cache_policy=NO_CACHE, task_run_name="seed spread: seeds {seeds.start}…{seeds.stop}")
def seed_ndcgs_task(
    training: RankerData,
    teacher_spec: BoostedSpec,
    student_epochs: int,
    seeds: range,
    tiers: tuple[str, ...],
    data: ServingData,
    split: Split,
    folder: Path,
    exclude_seen: bool,
) -> dict[str, list[float]]:
    return seed_ndcgs(training, teacher_spec, student_epochs, seeds, tiers, data, split, folder, exclude_seen)

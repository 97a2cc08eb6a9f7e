"""Prefect tasks over `training.tiers` (the logic lives there)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.ranker import CandidateRanker
from models.tier_bundle import ServingData
from splits.temporal import Split
from training.boosted import BoostedSpec
from training.data import RankerData, RankerSpec
from training.tiers import (
    FittedTier,
    RankerFit,
    TunedTifu,
    export_neural,
    export_rankers,
    fit_rankers,
    serving_data,
    tune_tifu,
)


@task(name="tune TIFU-KNN", cache_policy=NO_CACHE, task_run_name="tune TIFU-KNN on {validation.name}")
def tune_tifu_task(
    validation: Split, n_trials: int, study_dir: Path, data_hash: str, grocery_discovery: int = 0
) -> TunedTifu:
    return tune_tifu(validation, n_trials, study_dir, data_hash, grocery_discovery)


@task(name="serving data", cache_policy=NO_CACHE, task_run_name="serving data: {split.name}")
def serving_data_task(
    split: Split, generator_settings: dict, items: pd.DataFrame, exclude_seen: bool, data_hash: str
) -> tuple[ServingData, float]:
    return serving_data(split, generator_settings, items, exclude_seen, data_hash)


@task(name="train and distil", cache_policy=NO_CACHE, task_run_name="train and distil: {data.split.name}, seed {seed}")
def fit_rankers_task(data: RankerData, teacher_spec: BoostedSpec, student_epochs: int, seed: int = 0) -> RankerFit:
    return fit_rankers(data, teacher_spec, student_epochs, seed)


@task(name="export and quantize", cache_policy=NO_CACHE, task_run_name="export and quantize: {folder.name}")
def export_rankers_task(fit: RankerFit, folder: Path, exclude_seen: bool) -> dict[str, FittedTier]:
    return export_rankers(fit, folder, exclude_seen)


@task(name="export neural ranker", cache_policy=NO_CACHE, task_run_name="export and quantize {name}: {folder.name}")
def export_neural_task(
    name: str, model: CandidateRanker, spec: RankerSpec, seconds: float, folder: Path, exclude_seen: bool
) -> dict[str, FittedTier]:
    return export_neural(name, model, spec, seconds, folder, exclude_seen)

"""Prefect tasks over `training.tuning` (the logic lives there)."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tracking.tuning_runs import MlflowTrials
from training.data import RankerData, RankerSpec
from training.tuning import tune_ranker


@task(name="tune teacher", cache_policy=NO_CACHE, task_run_name="tune teacher")
def tune_ranker_task(
    data: RankerData, settings, storage_path: Path, study_name: str, parent_run_id: str
) -> tuple[RankerSpec, dict]:
    """The tuned teacher spec and a summary (study, trials, best validation NDCG@10, best epoch, seconds)."""
    start = time.perf_counter()
    study, spec = tune_ranker(
        data,
        settings.tuning_trials,
        settings.tuning_minutes,
        settings.max_epochs,
        storage_path,
        study_name,
        MlflowTrials(parent_run_id, study_name),
    )
    return spec, {
        "study": study_name,
        "trials": len(study.trials),
        "best_validation_ndcg_at_10": study.best_value,
        "best_epoch": spec.epochs,
        "seconds": time.perf_counter() - start,
    }

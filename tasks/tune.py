"""Prefect tasks over `training.tuning` (the logic lives there)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tracking.tuning_runs import MlflowTrials
from training.boosted import BoostedSpec
from training.data import RankerData
from training.tuning import TuningSummary, tune_teacher


@task(name="tune teacher", cache_policy=NO_CACHE, task_run_name="tune teacher")
def tune_ranker_task(
    data: RankerData, settings, storage_path: Path, study_name: str, parent_run_id: str
) -> tuple[BoostedSpec, TuningSummary]:
    """The tuned teacher spec and its study's summary; every trial a nested run of `parent_run_id`."""
    return tune_teacher(data, settings, storage_path, study_name, MlflowTrials(parent_run_id, study_name))

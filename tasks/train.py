"""Prefect tasks over `training.data` (the logic lives there)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.candidates import CandidateGenerator
from splits.temporal import Split
from training.data import RankerData, ranker_data


@task(name="ranker data", cache_policy=NO_CACHE, task_run_name="ranker data: {split.name}")
def ranker_data_task(
    split: Split,
    weeks: int,
    generator_settings: dict,
    with_validation: bool = False,
    generator: CandidateGenerator | None = None,
) -> RankerData:
    return ranker_data(split, weeks, generator_settings, with_validation, generator)

"""Prefect tasks over `tracking.registry` (the logic lives there)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from lightpersml.config import Gates
from tracking.registry import CandidateChoice, model_for, tag_federated_version, update_candidate


# Prefect wrapper. No retries: nothing here is worth repeating after a partial failure.
@task(name="update candidate", cache_policy=NO_CACHE, task_run_name="update candidate of {name}")
def update_candidate_task(pipeline_run_id: str, gates: Gates, name: str) -> CandidateChoice:
    return update_candidate(pipeline_run_id, gates, name)


@task(
    name="tag federated version",
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="tag version {version} of {name}",
)
def tag_federated_version_task(name: str, version: str, epsilon: float, delta: float, data_hash: str) -> None:
    tag_federated_version(name, version, epsilon, delta, data_hash)


@task(
    name="registered model",
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="registered model of {dataset}",
)
def model_for_task(dataset: str | None) -> str:
    return model_for(dataset)

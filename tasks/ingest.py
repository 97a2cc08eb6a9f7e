"""Prefect tasks over `nodes.sources` (the logic lives there)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts.dataset import Dataset
from nodes.sources import load_dataset


@task(name="ingest", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="ingest {source}")
def ingest_task(source: str) -> Dataset:
    """Retried: reading files is I/O."""
    return load_dataset(source)

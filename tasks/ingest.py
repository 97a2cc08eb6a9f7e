"""Ingest: load the bundled Complete Journey data or a folder of contract files."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts.completejourney import load_source
from data_contracts.dataset import Dataset


@task(name="ingest", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def ingest_task(source: str) -> Dataset:
    """`source`: "completejourney" or a folder path. Retried: reading files is I/O."""
    return load_source(source)

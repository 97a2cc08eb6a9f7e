"""Ingest: load the bundled Complete Journey data or a folder of contract files, plus the events
collected from edge nodes since (tasks/collect.py)."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts.completejourney import load_source
from data_contracts.dataset import Dataset
from lightpersml import config
from tasks.collect import with_collected_events


def load_dataset(source: str) -> Dataset:
    """`source` ("completejourney" or a folder path) with the events collected from its edge
    nodes: the one way every flow and federated node reads a dataset, so their cutoffs agree."""
    return with_collected_events(load_source(source), config.state_dir())


@task(name="ingest", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="ingest {source}")
def ingest_task(source: str) -> Dataset:
    """Retried: reading files is I/O."""
    return load_dataset(source)


def load_items(source: str) -> tuple[str, pd.DataFrame]:
    """The dataset's name and its items table (what collected events are checked against)."""
    dataset = load_source(source)
    return dataset.name, dataset.items

"""Prefect tasks over `nodes.collect` (the logic lives there)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from nodes.collect import NodeCollection, collect_node


@task(name="collect events", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, task_run_name="collect {node}")
def collect_node_task(node: str, url: str, token: str, items: pd.DataFrame, folder: Path) -> NodeCollection:
    """Retried: a retry continues from the cursor, so it never duplicates."""
    return collect_node(node, url, token, items, folder)

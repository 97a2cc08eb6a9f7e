"""Ingest: load the bundled Complete Journey data or a folder of contract files, plus the events
collected from edge nodes since (nodes/collect.py)."""

from __future__ import annotations

import pandas as pd

from data_contracts.dataset import Dataset
from data_contracts.sources import load_source
from lightpersml import config
from nodes.collect import with_collected_events


def load_dataset(source: str) -> Dataset:
    """`source` (a bundled source such as "completejourney", or a folder path) with the events collected from its edge
    nodes: the one way every flow and federated node reads a dataset, so their cutoffs agree."""
    return with_collected_events(load_source(source, config.downloads_dir()), config.state_dir())


def load_items(source: str) -> tuple[str, pd.DataFrame]:
    """The dataset's name and its items table (what collected events are checked against)."""
    dataset = load_source(source, config.downloads_dir())
    return dataset.name, dataset.items

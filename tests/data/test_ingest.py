"""Every reader of a dataset sees the same events: the training flow's ingest and each federated
node (which validates the data itself) both include the events collected from edge nodes."""

from __future__ import annotations

import shutil

import pandas as pd

from data_contracts import schema


def test_federated_nodes_read_the_collected_events_the_flow_reads(cj_slice, tmp_path, monkeypatch):
    from federated.task import _dataset
    from nodes.collect import collected_dir
    from nodes.sources import load_dataset

    monkeypatch.setenv("LIGHTPERSML_HOME", str(tmp_path / "home"))  # this test's own state folder
    data = tmp_path / "shop"
    shutil.copytree(cj_slice, data)
    events = pd.read_parquet(data / "events.parquet")
    newest = events[schema.TIMESTAMP].max()
    collected = events.tail(30).assign(
        **{schema.TIMESTAMP: newest + pd.Timedelta(days=3), "node": "store-a", "seq": range(1, 31)}
    )
    folder = collected_dir(tmp_path / "home" / ".lightpersml", "shop") / "events"
    folder.mkdir(parents=True)
    collected.to_parquet(folder / "store-a-1-30.parquet", index=False)
    _dataset.cache_clear()
    flow_events = load_dataset(str(data)).events  # what the flows' ingest task returns
    node_events = _dataset(str(data)).events
    assert flow_events[schema.TIMESTAMP].max() == node_events[schema.TIMESTAMP].max() == newest + pd.Timedelta(days=3)
    _dataset.cache_clear()

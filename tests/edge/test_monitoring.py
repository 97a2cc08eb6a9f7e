"""The monitoring flow against a real node's collected events: a quarter of Complete Journey's
households, a P-TopFreq bundle fitted before T on a node started with --log-exposures, the first
week after T replayed as it happened (every check passes), then the second week with the
biggest category taken out of stock (the flow fails on category_drop and recommends a retrain)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pandas as pd
import pytest

from data_contracts import schema
from lightpersml import config
from tests.edge.conftest import TOKEN, NodeProcess

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def before_t(shop, signing_keys, tmp_path_factory):
    """(the shop's data before T as a folder of contract files, a P-TopFreq bundle of it, the clean full data, T)."""
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset
    from experiments.simulator import baseline_bundles

    tmp = tmp_path_factory.mktemp("monitoring")
    clean, _ = validate_dataset(load_source(str(shop)), tmp / "report", **vars(config.ValidationSettings()))
    cut, bundles = baseline_bundles(clean, 2, tmp / "bundles", signing_keys[0])
    folder = tmp / "shop-before-t"
    folder.mkdir()
    for name, frame in clean.tables().items():
        frame = frame[frame[schema.TIMESTAMP] < cut] if name == "events" else frame
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder, bundles["p_topfreq"], clean, cut


def test_a_normal_week_passes_and_a_week_without_its_biggest_category_fails_the_flow(
    prefect_api, before_t, signing_keys, tmp_path
):
    import mlflow
    from experiments.simulator import replay, visits
    from flows.monitoring import monitoring_flow
    from monitoring.checks import MonitoringBreach
    from tracking.monitoring_runs import MLFLOW_EXPERIMENT

    data, bundle, clean, cut = before_t
    week = pd.Timedelta(weeks=1)
    planned = visits(clean, cut)
    first = [v for v in planned if v.at < (cut + week - pd.Timestamp("1970-01-01")).total_seconds()]
    category = clean.items.set_index(schema.ITEM_ID)[schema.CATEGORY]
    node = NodeProcess(tmp_path, signing_keys[1], options=("--log-exposures",)).start(bundle)
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(f'[[nodes]]\nname = "store"\nurl = "{node.url}"\ntoken = "{TOKEN}"\n')
    try:
        assert replay(node.url, node.headers, first).failed_visits == 0
        passed = monitoring_flow(str(nodes), str(data))
        assert not passed.breached, passed.checks
        assert passed.check("online_hit_rate").value > 0.02  # measured from the logged answers
        assert passed.check("score_shift").value is None  # no week before to compare with yet

        # The second week, with the first week's biggest category gone from every store.
        second = planned[len(first) :]
        bought = pd.Series([item for v in first for item, _ in v.lines]).map(category)
        gone = bought.value_counts().index[0]
        gone_items = set(category[category == gone].index)
        out = [
            {"store_id": store, "item_id": item, "in_stock": False}
            for store in {v.store_id for v in second}
            for item in gone_items
        ]
        for start in range(0, len(out), 100_000):
            assert (
                httpx.put(
                    f"{node.url}/admin/stock", json={"changes": out[start : start + 100_000]}, headers=AUTH
                ).status_code
                == 200
            )
        shifted = [replace(v, lines=tuple(line for line in v.lines if line[0] not in gone_items)) for v in second]
        replay(node.url, node.headers, [v for v in shifted if v.lines])
        with pytest.raises(MonitoringBreach, match="category_drop") as breach:  # (and category_shift)
            monitoring_flow(str(nodes), str(data))
        assert "retrain" in str(breach.value)
    finally:
        node.stop()
    runs = mlflow.search_runs(experiment_names=[MLFLOW_EXPERIMENT], order_by=["start_time ASC"])
    assert list(runs["tags.retrain"]) == ["false", "true"]
    assert "category_drop" in runs["tags.breached"].iloc[1].split(",")
    assert runs["metrics.score_shift"].iloc[1] >= 0  # measured once a week before exists

"""Events flow back from a real node into the training data: exactly once across repeated and
interrupted runs, unknown items quarantined, and the next ingest sees them."""

from __future__ import annotations

import json

import httpx
import pandas as pd

from data_contracts import schema
from data_contracts.completejourney import load_source
from lightpersml import config
from tasks.collect import collected_dir, collected_events
from tests.edge.conftest import TOKEN, NodeProcess


def post(url: str, events: list[dict]) -> None:
    assert httpx.post(f"{url}/v1/events", json={"events": events}).status_code == 200


def test_collect_appends_each_event_once_and_the_next_ingest_sees_them(prefect_api, cj_slice, edge_bundle, signing_keys,
                                                                      tmp_path):
    from flows.collect import collect_flow
    from tasks.ingest import ingest_task

    items = pd.read_parquet(cj_slice / "items.parquet")[schema.ITEM_ID].astype(str).tolist()
    node = NodeProcess(tmp_path, signing_keys[1]).start(edge_bundle)
    try:
        nodes_file = tmp_path / "nodes.toml"
        nodes_file.write_text(f'[[nodes]]\nname = "store-a"\nurl = "{node.url}"\ntoken = "{TOKEN}"\n')
        when = "2017-12-20T10:00:00Z"  # the days after the slice's data end
        post(node.url, [{"user_id": "u1", "item_id": item, "event_type": "purchase", "timestamp": when, "basket_id": "b1"}
                        for item in items[:5]] + [{"user_id": "u1", "item_id": "no-such-item", "event_type": "view",
                                                   "timestamp": when}])
        first = collect_flow(str(nodes_file), data=str(cj_slice))
        assert first[0] | {"cursor_before": 0} == {"node": "store-a", "cursor_before": 0, "pulled": 6, "appended": 5,
                                                   "quarantined": 1, "cursor_after": 6}
        assert collect_flow(str(nodes_file), data=str(cj_slice))[0]["pulled"] == 0  # nothing new, nothing twice

        post(node.url, [{"user_id": "u2", "item_id": items[7], "event_type": "add_to_cart", "timestamp": when}])
        folder = collected_dir(config.state_dir(), cj_slice.name)
        (folder / "cursors.json").write_text(json.dumps({"store-a": 3}))  # a run that died before moving its cursor
        again = collect_flow(str(nodes_file), data=str(cj_slice))[0]
        assert again["pulled"] == 4 and again["cursor_after"] == 7
    finally:
        node.stop()

    collected = collected_events(config.state_dir(), cj_slice.name)
    assert len(collected) == 6 and collected[schema.USER_ID].tolist() == ["u1"] * 5 + ["u2"]
    quarantined = pd.concat(pd.read_parquet(p) for p in (folder / "quarantine").glob("*.parquet"))
    assert quarantined.drop_duplicates("seq")[schema.ITEM_ID].tolist() == ["no-such-item"]  # kept, with its reason
    assert set(quarantined["reason"]) == {"item_id not in the items table"}
    original = load_source(str(cj_slice))
    ingested = ingest_task.fn(str(cj_slice))
    assert len(ingested.events) == len(original.events) + 6
    assert "appended 6 events collected from edge nodes" in ingested.notes

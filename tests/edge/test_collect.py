"""Events flow back from a real node into the training data: exactly once across repeated and
interrupted runs, unknown items quarantined, and the next ingest sees them."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pandas as pd

from data_contracts import schema
from data_contracts.sources import load_source
from lightpersml import config
from nodes.collect import NodeCollection, collected_dir, collected_events
from tests.edge.conftest import TOKEN, NodeProcess


def post(node: NodeProcess, events: list[dict]) -> None:
    assert httpx.post(f"{node.url}/v1/events", json={"events": events}, headers=node.headers).status_code == 200


def test_collect_appends_each_event_once_and_the_next_ingest_sees_them(
    prefect_api, cj_slice, edge_bundle, signing_keys, tmp_path
):
    import shutil

    from flows.collect import collect_flow
    from tasks.ingest import ingest_task

    data = tmp_path / "cj_collect"  # its own dataset name: other tests' ingests of the slice see nothing of this
    shutil.copytree(cj_slice, data)
    items = pd.read_parquet(data / "items.parquet")[schema.ITEM_ID].astype(str).tolist()
    node = NodeProcess(tmp_path, signing_keys[1]).start(edge_bundle)
    try:
        nodes_file = tmp_path / "nodes.toml"
        nodes_file.write_text(f'[[nodes]]\nname = "store-a"\nurl = "{node.url}"\ntoken = "{TOKEN}"\n')
        when = "2017-12-20T10:00:00Z"  # the days after the slice's data end
        post(
            node,
            [
                {"user_id": "u1", "item_id": item, "event_type": "purchase", "timestamp": when, "basket_id": "b1"}
                for item in items[:5]
            ]
            + [{"user_id": "u1", "item_id": "no-such-item", "event_type": "view", "timestamp": when}],
        )
        first = collect_flow(str(nodes_file), data=str(data))
        assert replace(first[0], cursor_before=0) == NodeCollection(
            node="store-a",
            status="collected",
            detail="",
            cursor_before=0,
            pulled=6,
            appended=5,
            quarantined=1,
            cursor_after=6,
        )
        assert collect_flow(str(nodes_file), data=str(data))[0].pulled == 0  # nothing new, nothing twice

        post(node, [{"user_id": "u2", "item_id": items[7], "event_type": "add_to_cart", "timestamp": when}])
        folder = collected_dir(config.state_dir(), data.name)
        (folder / "cursors.json").write_text(json.dumps({"store-a": 3}))  # a run that died before moving its cursor
        again = collect_flow(str(nodes_file), data=str(data))[0]
        assert again.pulled == 4 and again.cursor_after == 7
    finally:
        node.stop()

    collected = collected_events(config.state_dir(), data.name)
    assert len(collected) == 6 and collected[schema.USER_ID].tolist() == ["u1"] * 5 + ["u2"]
    quarantined = pd.concat(pd.read_parquet(p) for p in (folder / "quarantine").glob("*.parquet"))
    assert quarantined.drop_duplicates("seq")[schema.ITEM_ID].tolist() == ["no-such-item"]  # kept, with its reason
    assert set(quarantined["reason"]) == {"item_id not in the items table"}
    original = load_source(str(data))
    ingested = ingest_task.fn(str(data))
    assert len(ingested.events) == len(original.events) + 6
    assert "appended 6 events collected from edge nodes" in ingested.notes


def test_collect_quarantines_event_times_a_node_would_refuse(
    prefect_api, cj_slice, edge_bundle, signing_keys, tmp_path
):
    """Rows an older node logged unchecked (year 9999, 2100, 1990) never reach the training data."""
    import shutil
    import sqlite3

    from flows.collect import collect_flow

    data = tmp_path / "cj_window"  # its own dataset name, so its own collected folder
    shutil.copytree(cj_slice, data)
    item = str(pd.read_parquet(cj_slice / "items.parquet")[schema.ITEM_ID].iloc[0])
    (tmp_path / "n").mkdir()
    node = NodeProcess(tmp_path / "n", signing_keys[1]).start(edge_bundle)
    post = httpx.post(
        f"{node.url}/v1/events",
        headers=node.headers,
        json={"user_id": "u1", "item_id": item, "event_type": "view", "timestamp": "2017-12-20T10:00:00Z"},
    )
    assert post.status_code == 200
    node.stop()
    db = sqlite3.connect(node.node_dir / "events.db")
    db.executemany(
        "INSERT INTO events (user_id, item_id, event_type, timestamp) VALUES ('u1', ?, 'purchase', ?)",
        [
            (item, stamp)
            for stamp in ("9999-12-31T23:59:59-14:00", "2100-01-01T00:00:00+00:00", "1990-01-01T00:00:00+00:00")
        ],
    )
    db.commit()
    db.close()
    node.start()
    try:
        nodes_file = tmp_path / "nodes.toml"
        nodes_file.write_text(f'[[nodes]]\nname = "old-node"\nurl = "{node.url}"\ntoken = "{TOKEN}"\n')
        report = collect_flow(str(nodes_file), data=str(data))[0]
    finally:
        node.stop()
    assert (report.pulled, report.appended, report.quarantined) == (4, 1, 3)
    folder = collected_dir(config.state_dir(), "cj_window")
    quarantined = pd.concat(pd.read_parquet(p) for p in (folder / "quarantine").glob("*.parquet"))
    assert len(quarantined) == 3 and quarantined["reason"].str.contains("outside the node's window").all()
    assert collected_events(config.state_dir(), "cj_window")[schema.TIMESTAMP].dt.year.tolist() == [2017]


def test_the_collect_command_reports_an_unreachable_node_and_exits_1(
    prefect_api, cj_slice, edge_bundle, signing_keys, tmp_path
):
    """One node up, one gone: the live node's events are collected, the other is reported failed."""
    import shutil
    import socket

    from typer.testing import CliRunner

    from lightpersml.cli import app

    data = tmp_path / "cj_two_nodes"
    shutil.copytree(cj_slice, data)
    item = str(pd.read_parquet(data / "items.parquet")[schema.ITEM_ID].iloc[0])
    with socket.socket() as s:  # a port nobody listens on (bound and held while the command runs)
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        (tmp_path / "n").mkdir()
        node = NodeProcess(tmp_path / "n", signing_keys[1]).start(edge_bundle)
        try:
            post(node, [{"user_id": "u1", "item_id": item, "event_type": "view", "timestamp": "2017-12-20T10:00:00Z"}])
            nodes_file = tmp_path / "nodes.toml"
            nodes_file.write_text(
                f'[[nodes]]\nname = "gone"\nurl = "http://127.0.0.1:{dead}"\ntoken = "{TOKEN}"\n\n'
                f'[[nodes]]\nname = "store-a"\nurl = "{node.url}"\ntoken = "{TOKEN}"\n'
            )
            result = CliRunner().invoke(app, ["collect", "--nodes", str(nodes_file), "--data", str(data)])
        finally:
            node.stop()
    assert result.exit_code == 1, result.output
    assert "gone: failed" in result.output and "ConnectError" in result.output
    assert "store-a: collected, 1 pulled, 1 appended" in result.output

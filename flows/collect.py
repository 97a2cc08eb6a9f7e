"""Collect shopper events from every edge node into the training data (nodes/collect.py), so the
next nightly run learns from them. Exactly once and restartable: per-node cursors move only after
the events are written. Run it by hand or on a schedule (`lightpersml collect --nodes FILE`)."""

from __future__ import annotations

from lightpersml import config

config.apply_environment()  # before prefect and mlflow load: they read it on import

from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.artifacts import create_table_artifact

from nodes.collect import NodeCollection, collected_dir, failed_collection
from nodes.fleet import EdgeNode, read_nodes
from nodes.sources import load_items
from tasks.collect import collect_node_task


@flow(name="collect-events", log_prints=True)
def collect_flow(nodes_file: str, data: str = "completejourney") -> list[NodeCollection]:
    """Pull new events of every node in `nodes_file` into the training data of `data`; one report row per node."""
    name, items = load_items(data)
    return collect_events(read_nodes(Path(nodes_file)), collected_dir(config.state_dir(), name), items)


def collect_events(nodes: list[EdgeNode], folder: Path, items: pd.DataFrame) -> list[NodeCollection]:
    """The flow's steps (also run by the experiment report): every node's new events into `folder`."""
    rows = []
    for node in nodes:  # one unreachable node must not stop the others (its cursor stays where it was)
        state = collect_node_task(node.name, node.url, node.token, items, folder, return_state=True)
        rows.append(
            state.result()
            if state.is_completed()
            else failed_collection(node.name, state.result(raise_on_failure=False))
        )
    create_table_artifact(
        key="collected-events", table=[asdict(row) for row in rows], description=f"Events collected into {folder}"
    )
    for row in rows:
        print(
            f"{row.node}: {row.status}, {row.pulled} pulled, {row.appended} appended, "
            f"{row.quarantined} quarantined (cursor {row.cursor_before} → {row.cursor_after}) {row.detail}"
        )
    return rows

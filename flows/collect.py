"""Collect shopper events from every edge node into the training data (tasks/collect.py), so the
next nightly run learns from them. Exactly once and restartable: per-node cursors move only after
the events are written. Run it by hand or on a schedule (`lightpersml collect --nodes FILE`)."""

from __future__ import annotations

from lightpersml import config  # first: sets the quiet environment before prefect/mlflow load

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from tasks.collect import collect_node_task, collected_dir
from tasks.ingest import load_items
from tasks.nodes import read_nodes


@flow(name="collect-events", log_prints=True)
def collect_flow(nodes_file: str, data: str = "completejourney") -> list[dict]:
    """Pull new events of every node in `nodes_file` into the training data of `data`; one report row per node."""
    nodes = read_nodes(Path(nodes_file))
    name, items = load_items(data)
    folder = collected_dir(config.state_dir(), name)
    rows = [collect_node_task(node.name, node.url, node.token, items, folder) for node in nodes]
    create_table_artifact(key="collected-events", table=rows, description=f"Events collected into {folder}")
    for row in rows:
        print(f"{row['node']}: {row['pulled']} pulled, {row['appended']} appended, {row['quarantined']} quarantined "
              f"(cursor {row['cursor_before']} → {row['cursor_after']})")
    return rows

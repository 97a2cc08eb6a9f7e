"""Pushing a stock file to edge nodes between bundles: the availability table of the data
contract (`store_id`, `item_id`, `in_stock`) read and checked here, then PUT to each node's
/admin/stock (`edge.stock`) in batches, one report row per node."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from data_contracts import schema
from data_contracts.conform import conform_table
from data_contracts.folder import read_table
from edge.stock import MAX_STOCK_CHANGES
from nodes.fleet import EdgeNode

COLUMNS = (schema.STORE_ID, schema.ITEM_ID, schema.IN_STOCK)


@dataclass(frozen=True)
class StockPushed:
    """One node's outcome: changes it now serves, changes for ids its bundle does not know."""

    node: str
    url: str
    applied: int
    ignored: int
    status: str  # "updated" or "failed"
    detail: str


def read_stock_file(path: Path) -> list[dict]:
    """The changes of a CSV/Parquet availability file; a ValueError names the file, the column
    and the first bad lines (CSV lines count the header as line 1)."""
    path = Path(path)
    frame = read_table(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)})")
    table, findings = conform_table(frame[list(COLUMNS)], schema.AVAILABILITY)
    if findings:
        first = findings[0]
        lines = ", ".join(str(i + 2) for i in first.row_indices[:5])
        raise ValueError(f"{path}: column {first.column}: {first.detail} (lines {lines})")
    empty = table.isna().any(axis=1).to_numpy().nonzero()[0]
    if len(empty):
        raise ValueError(
            f"{path}: empty store_id, item_id or in_stock (lines {', '.join(str(i + 2) for i in empty[:5])})"
        )
    return [{"store_id": s, "item_id": i, "in_stock": bool(v)} for s, i, v in table.itertuples(index=False, name=None)]


def push_stock(node: EdgeNode, changes: list[dict]) -> StockPushed:
    """PUT `changes` to the node in batches; stops at the first refused batch."""
    applied = ignored = 0
    with httpx.Client(headers={"Authorization": f"Bearer {node.token}"}, timeout=120) as client:
        for start in range(0, len(changes), MAX_STOCK_CHANGES):
            try:
                response = client.put(
                    f"{node.url}/admin/stock", json={"changes": changes[start : start + MAX_STOCK_CHANGES]}
                )
            except httpx.HTTPError as error:
                detail = f"unreachable: {type(error).__name__}: {error}"
                return StockPushed(node.name, node.url, applied, ignored, "failed", detail)
            if response.status_code != 200:
                detail = f"HTTP {response.status_code}: {response.text[:300]}"
                return StockPushed(node.name, node.url, applied, ignored, "failed", detail)
            body = response.json()
            applied, ignored = applied + body["applied"], ignored + body["ignored"]
    return StockPushed(node.name, node.url, applied, ignored, "updated", "")

"""Partition: which federated node holds which store's shopper data.

Rule (documented in the README): stores are sorted by their number of baskets, largest first,
and each goes to the node that holds the fewest baskets so far, so nodes carry similar amounts
of data (a greedy balance). Purchases without a store (online orders) go to node
crc32(user_id) mod n_nodes. A node sees only the purchases made at its stores: a shopper who
shops at stores of two nodes appears in both, each with part of their baskets. Item ids are the
shared product catalog (public), so every node indexes items the same way.
"""

from __future__ import annotations

import zlib

import pandas as pd
import polars as pl

from data_contracts import schema
from data_contracts.dataset import Dataset
from splits.temporal import BASKET_KEY, Split, build_split, cutoffs, purchase_lines

NODE = "node"


def store_nodes(lines: pl.DataFrame, n_nodes: int) -> dict[str, int]:
    """store_id → node in 0..n_nodes-1 by the greedy balance of basket counts (ties: store id)."""
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be ≥ 1, got {n_nodes}")
    baskets = (
        lines.drop_nulls(schema.STORE_ID)
        .group_by(schema.STORE_ID)
        .agg(pl.col(BASKET_KEY).n_unique().alias("baskets"))
        .sort(["baskets", schema.STORE_ID], descending=[True, False])
    )
    load, nodes = [0] * n_nodes, {}
    for store, count in baskets.iter_rows():
        node = min(range(n_nodes), key=lambda n: (load[n], n))
        nodes[store] = node
        load[node] += count
    return nodes


def with_nodes(lines: pl.DataFrame, n_nodes: int) -> pl.DataFrame:
    """`lines` with a `node` column (see the module docstring)."""
    stores = store_nodes(lines, n_nodes)
    by_store = pl.DataFrame(
        {schema.STORE_ID: list(stores), NODE: list(stores.values())},
        schema={schema.STORE_ID: pl.String, NODE: pl.Int64},
    )
    out = lines.join(by_store, on=schema.STORE_ID, how="left", maintain_order="left")
    if out[NODE].null_count():
        by_user = out[schema.USER_ID].map_elements(lambda u: zlib.crc32(u.encode()) % n_nodes, return_dtype=pl.Int64)
        out = out.with_columns(pl.col(NODE).fill_null(by_user))
    return out


def node_splits(
    dataset: Dataset, n_nodes: int, split: str = "test", test_weeks: int = 4, validation_weeks: int = 4
) -> list[Split]:
    """Each node's own split at the central `split` cutoff: its history holds only its stores'
    purchases before the cutoff (targets: its shoppers' first basket there after the cutoff)."""
    lines = purchase_lines(dataset)
    cutoff, end = cutoffs(lines, test_weeks, validation_weeks)[split]
    lines = with_nodes(lines, n_nodes)
    return [
        build_split(
            lines.filter(pl.col(NODE) == node).drop(NODE),
            dataset,
            f"node-{node}",
            pd.Timestamp(cutoff),
            pd.Timestamp(end),
        )
        for node in range(n_nodes)
    ]

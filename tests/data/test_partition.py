"""Federated partitions: every purchase in exactly one node, nodes balanced by baskets, a node's
split holds only its stores' purchases, online orders follow the shopper."""

from __future__ import annotations

import zlib

import pandas as pd
import polars as pl
import pytest

from data_contracts import schema
from data_contracts.sources import load_source
from splits.partition import NODE, node_splits, store_nodes, with_nodes
from splits.temporal import BASKET_KEY, purchase_lines
from tests.data.baskets import purchase_baskets


@pytest.fixture(scope="module")
def slice_dataset(cj_slice):
    return load_source(str(cj_slice))


def test_each_purchase_goes_to_one_node_and_nodes_are_balanced(slice_dataset):
    baskets = purchase_baskets(slice_dataset.events)
    nodes = store_nodes(pl.from_pandas(baskets.rename(columns={"basket": BASKET_KEY})), 3)
    assert set(nodes) == set(baskets["store_id"].dropna()) and set(nodes.values()) == {0, 1, 2}
    per_node = baskets.assign(node=baskets["store_id"].map(nodes)).groupby("node")["basket"].nunique()
    assert per_node.max() / per_node.min() < 1.2
    assigned = with_nodes(purchase_lines(slice_dataset), 3)
    assert len(assigned) == len(baskets)  # every purchase line, once
    assert assigned[NODE].to_list() == [nodes[store] for store in assigned[schema.STORE_ID].to_list()]


def test_the_greedy_rule_by_hand():
    lines = pl.DataFrame(
        {schema.STORE_ID: ["a", "a", "a", "b", "b", "c", "d"], BASKET_KEY: ["1", "2", "3", "4", "5", "6", "7"]}
    )
    # a (3 baskets) → node 0; b (2) → node 1; c (1) → node 1 (load 2 < 3); d (1) → node 0 (3 = 3: lower id)
    assert store_nodes(lines, 2) == {"a": 0, "b": 1, "c": 1, "d": 0}


def test_online_orders_follow_the_shopper():
    lines = pl.DataFrame(
        {schema.USER_ID: ["u1", "u2"], schema.STORE_ID: [None, "s"], BASKET_KEY: ["1", "2"]},
        schema={schema.USER_ID: pl.String, schema.STORE_ID: pl.String, BASKET_KEY: pl.String},
    )
    assert with_nodes(lines, 5)[NODE].to_list() == [zlib.crc32(b"u1") % 5, 0]


def test_a_nodes_split_holds_only_its_stores_purchases(slice_dataset):
    splits = node_splits(slice_dataset, 3)
    baskets = purchase_baskets(slice_dataset.events)
    nodes = store_nodes(pl.from_pandas(baskets.rename(columns={"basket": BASKET_KEY})), 3)  # checked above
    cutoff = baskets["time"].max() - pd.Timedelta(weeks=4)  # the central test cutoff
    before = baskets[baskets["time"] < cutoff].assign(node=lambda b: b["store_id"].map(nodes))
    for node, split in enumerate(splits):
        assert split.cutoff == cutoff
        mine = before[before["node"] == node]
        assert split.history.n_baskets == mine["basket"].nunique() > 0
        assert split.history.n_users == mine["user_id"].nunique()
        assert sorted(split.catalog.user_ids[: split.history.n_users]) == sorted(mine["user_id"].unique())

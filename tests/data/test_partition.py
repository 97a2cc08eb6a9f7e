"""Federated partitions: every purchase in exactly one node, nodes balanced by baskets, a node's
split holds only its stores' purchases, online orders follow the shopper."""

from __future__ import annotations

import zlib

import polars as pl
import pytest

from data_contracts import schema
from data_contracts.completejourney import load_source
from tasks.features import BASKET_KEY, purchase_lines
from tasks.partition import NODE, node_splits, store_nodes, with_nodes


@pytest.fixture(scope="module")
def slice_dataset(cj_slice):
    return load_source(str(cj_slice))


def test_each_purchase_goes_to_one_node_and_nodes_are_balanced(slice_dataset):
    lines = purchase_lines(slice_dataset)
    assigned = with_nodes(lines, 3)
    assert len(assigned) == len(lines) and assigned[NODE].null_count() == 0
    stores = assigned.group_by(schema.STORE_ID).agg(pl.col(NODE).n_unique())
    assert stores[NODE].max() == 1  # a store never straddles two nodes
    baskets = assigned.group_by(NODE).agg(pl.col(BASKET_KEY).n_unique().alias("b"))["b"]
    assert baskets.max() / baskets.min() < 1.2


def test_the_greedy_rule_by_hand():
    lines = pl.DataFrame({schema.STORE_ID: ["a", "a", "a", "b", "b", "c", "d"], BASKET_KEY: ["1", "2", "3", "4", "5", "6", "7"]})
    # a (3 baskets) → node 0; b (2) → node 1; c (1) → node 1 (load 2 < 3); d (1) → node 0 (3 = 3: lower id)
    assert store_nodes(lines, 2) == {"a": 0, "b": 1, "c": 1, "d": 0}


def test_online_orders_follow_the_shopper():
    lines = pl.DataFrame({schema.USER_ID: ["u1", "u2"], schema.STORE_ID: [None, "s"], BASKET_KEY: ["1", "2"]},
                         schema={schema.USER_ID: pl.String, schema.STORE_ID: pl.String, BASKET_KEY: pl.String})
    assert with_nodes(lines, 5)[NODE].to_list() == [zlib.crc32(b"u1") % 5, 0]


def test_a_nodes_split_holds_only_its_stores_purchases(slice_dataset):
    splits = node_splits(slice_dataset, 3)
    lines = with_nodes(purchase_lines(slice_dataset), 3)
    cutoff = splits[0].cutoff
    for node, split in enumerate(splits):
        before = lines.filter((pl.col(NODE) == node) & (pl.col(schema.TIMESTAMP) < cutoff))
        assert split.history.n_baskets == before[BASKET_KEY].n_unique()
        assert split.history.n_users == before[schema.USER_ID].n_unique()
    assert sum(s.history.n_baskets for s in splits) == lines.filter(pl.col(schema.TIMESTAMP) < cutoff)[BASKET_KEY].n_unique()

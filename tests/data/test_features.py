"""Temporal split and features on a real slice: no leakage, first basket as target, caching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from data_contracts import schema
from data_contracts.folder import load_folder
from data_contracts.validation import validate_dataset
from splits.temporal import build_splits, purchase_lines
from tests.data.baskets import purchase_baskets


@pytest.fixture(scope="module")
def clean_slice(cj_slice, tmp_path_factory):
    clean, _ = validate_dataset(load_folder(cj_slice), tmp_path_factory.mktemp("report"))
    return clean


@pytest.fixture(scope="module")
def splits(clean_slice, tmp_path_factory):
    splits, hit = build_splits(clean_slice, clean_slice.content_hash(), tmp_path_factory.mktemp("cache"))
    assert not hit
    return splits


def test_cutoffs_are_four_weeks_apart(clean_slice, splits):
    newest = purchase_baskets(clean_slice.events)["time"].max()
    assert splits["test"].cutoff == newest - pd.Timedelta(weeks=4)
    assert splits["validation"].cutoff == splits["test"].cutoff - pd.Timedelta(weeks=4)
    assert splits["validation"].end == splits["test"].cutoff


def test_history_and_features_stop_at_the_cutoff(clean_slice, splits):
    origin = clean_slice.events[schema.TIMESTAMP].min()
    baskets = purchase_baskets(clean_slice.events)
    for split in splits.values():
        cutoff_day = (split.cutoff - origin).total_seconds() / 86400
        assert split.cutoff_day == pytest.approx(cutoff_day)
        assert split.history.basket_day.max() < cutoff_day
        before = baskets[baskets["time"] < split.cutoff]
        assert split.history.n_baskets == before["basket"].nunique()
        assert split.features["item_features"]["popularity"].sum() == len(before)  # baskets per item, before only


def test_target_is_each_users_first_basket_after_the_cutoff(clean_slice, splits):
    split = splits["test"]
    baskets = purchase_baskets(clean_slice.events)
    before, after = baskets[baskets["time"] < split.cutoff], baskets[baskets["time"] >= split.cutoff]
    first = after[after["time"] == after.groupby("user_id")["time"].transform("min")]
    expected = {
        user: set(items) for user, items in first.groupby("user_id")["item_id"] if user in set(before["user_id"])
    }  # a target needs history before the cutoff
    got = {split.catalog.user_ids[u]: {split.catalog.item_ids[i] for i in items} for u, items in split.targets.items()}
    assert got == expected and len(got) > 50


def test_store_popularity_counts_and_ranks_each_stores_baskets_before_the_cutoff(clean_slice, splits):
    split = splits["test"]
    baskets = purchase_baskets(clean_slice.events)
    before = baskets[(baskets["time"] < split.cutoff) & baskets["store_id"].notna()]
    expected = before.groupby(["store_id", "item_id"]).size()
    table = split.features["store_popularity"].to_pandas()
    got = table.set_index([schema.STORE_ID, schema.ITEM_ID])["baskets"]
    assert got.sort_index().to_dict() == expected.sort_index().to_dict()
    for _, store in table.groupby(schema.STORE_ID):  # ranks 1..n, most baskets first
        by_rank = store.sort_values("rank")
        assert by_rank["rank"].tolist() == list(range(1, len(store) + 1))
        assert by_rank["baskets"].is_monotonic_decreasing


def test_rerun_on_same_data_reads_the_cache(clean_slice, splits, tmp_path):
    first, hit = build_splits(clean_slice, "samehash", tmp_path)
    again, hit_again = build_splits(clean_slice, "samehash", tmp_path)
    assert (hit, hit_again) == (False, True)
    assert again["test"].targets == first["test"].targets
    assert np.array_equal(again["test"].history.items, first["test"].history.items)


def test_content_hash_changes_with_the_data(clean_slice):
    changed = type(clean_slice)(**{**clean_slice.__dict__, "events": clean_slice.events.iloc[1:]})
    assert changed.content_hash() != clean_slice.content_hash()


def test_newest_availability_row_wins_and_unlisted_stores_stock_what_they_sold(clean_slice, tmp_path):
    from data_contracts.dataset import Dataset

    store = clean_slice.events[schema.STORE_ID].value_counts().index[0]
    other = clean_slice.events[schema.STORE_ID].value_counts().index[1]
    item_a, item_b = clean_slice.items[schema.ITEM_ID].iloc[:2]
    availability = pd.DataFrame(
        {
            schema.STORE_ID: [store, store, store],
            schema.ITEM_ID: [item_a, item_a, item_b],
            schema.IN_STOCK: [True, False, True],
            schema.VALID_FROM: pd.to_datetime(["2017-01-01", "2017-02-01", None]),
        }
    )
    data = Dataset(**{**clean_slice.__dict__, "availability": availability})
    splits, _ = build_splits(data, "stock", tmp_path)
    catalog = splits["test"].catalog
    s = list(catalog.store_ids).index(store)
    stocked = {catalog.item_ids[i] for i in catalog.in_stock[s].indices}
    assert stocked == {item_b}  # item_a's newest row says out of stock
    o = list(catalog.store_ids).index(other)
    assert catalog.in_stock[o].nnz == (catalog.store_popularity[o] > 0).nnz > 0


def test_a_split_sees_only_stock_known_before_its_cutoff(clean_slice, tmp_path):
    """The evaluation filters each answer by its store's stock: a row valid from after the test
    cutoff (e.g. what a store sold in the test weeks) must not reach the test split, only the refit."""
    from data_contracts.dataset import Dataset

    store = clean_slice.events[schema.STORE_ID].value_counts().index[0]
    item_a, item_b = clean_slice.items[schema.ITEM_ID].iloc[:2]
    newest = clean_slice.events[schema.TIMESTAMP].max()
    availability = pd.DataFrame(
        {
            schema.STORE_ID: [store, store],
            schema.ITEM_ID: [item_a, item_b],
            schema.IN_STOCK: [True, True],
            schema.VALID_FROM: [
                newest - pd.Timedelta(weeks=12),
                newest - pd.Timedelta(weeks=1),
            ],  # before / after the test cutoff
        }
    )
    splits, _ = build_splits(Dataset(**{**clean_slice.__dict__, "availability": availability}), "known", tmp_path)

    def stocked(split):
        catalog = split.catalog
        return {catalog.item_ids[i] for i in catalog.in_stock[list(catalog.store_ids).index(store)].indices}

    assert stocked(splits["test"]) == {item_a}
    assert stocked(splits["deploy"]) == {item_a, item_b}


def test_too_short_data_gets_a_clear_error(clean_slice, tmp_path):
    from data_contracts.dataset import Dataset
    from data_contracts.errors import DataContractError

    events = clean_slice.events
    short = events[events[schema.TIMESTAMP] < events[schema.TIMESTAMP].min() + pd.Timedelta(weeks=3)]
    with pytest.raises(DataContractError, match="split is empty.*purchases span"):
        build_splits(Dataset(**{**clean_slice.__dict__, "events": short}), "short", tmp_path)


def test_basket_ids_numbered_per_user_stay_apart():
    from data_contracts.dataset import Dataset

    events = pd.DataFrame(
        {
            schema.USER_ID: ["a", "b", "a"],
            schema.ITEM_ID: ["x", "x", "y"],
            schema.BASKET_ID: ["1", "1", "2"],
            schema.TIMESTAMP: pd.to_datetime(["2020-01-01", "2020-03-01", "2020-01-05"]),
        }
    )
    lines = purchase_lines(Dataset(name="tiny", events=events, items=pd.DataFrame({schema.ITEM_ID: ["x", "y"]})))
    assert lines.height == 3 and lines["basket_key"].n_unique() == 3
    assert lines.filter(pl.col(schema.USER_ID) == "b")[schema.TIMESTAMP].to_list() == [pd.Timestamp("2020-03-01")]

"""Baseline tiers and the Recommender on tiny hand-made histories."""

import numpy as np
import pytest
import scipy.sparse as sp

from models.baselines import TIFUKNN, GTopFreq, PTopFreq
from models.baskets import BasketHistory
from models.ranking import top_k
from models.recommender import Catalog, Recommender


def history_from(baskets_per_user: list[list[list[int]]], n_items: int) -> BasketHistory:
    """[[basket items, ...] per user] in time order → BasketHistory."""
    user_ptr, basket_ptr, items, days = [0], [0], [], []
    for baskets in baskets_per_user:
        for day, basket in enumerate(baskets):
            items += basket
            basket_ptr.append(len(items))
            days.append(float(day))
        user_ptr.append(len(days))
    return BasketHistory(len(baskets_per_user), n_items, np.array(user_ptr), np.array(basket_ptr),
                         np.array(items), np.array(days))


def catalog_for(history: BasketHistory, in_stock: list[list[int]] | None = None) -> Catalog:
    stock = in_stock or [list(range(history.n_items))]
    rows = [s for s, items in enumerate(stock) for _ in items]
    cols = [i for items in stock for i in items]
    matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(stock), history.n_items))
    return Catalog(np.array([f"i{i}" for i in range(history.n_items)]), np.array([f"u{u}" for u in range(history.n_users)]),
                   history.item_basket_counts().astype(np.float32), np.array([f"s{s}" for s in range(len(stock))]),
                   matrix, matrix.copy())


HISTORY = history_from([[[0, 1], [0, 2], [0]], [[3], [3, 4]], [[1, 2]]], n_items=6)
# Baskets per item: 0 → 3; 1, 2 and 3 → 2 each; 4 → 1; 5 → 0. Tests ask for enough items that
# no tie straddles the k-th place (top_k breaks those arbitrarily; ties inside the k go by index).


def test_top_k_orders_and_marks_empty_slots():
    idx, scores = top_k(np.array([[0.1, 0.5, -np.inf, 0.3]]), 4)
    assert idx.tolist() == [[1, 3, 0, -1]]


def test_top_k_orders_ties_inside_the_k_by_index():
    scores = np.array([[2.0, 5.0, 2.0, 2.0, 1.0, 2.0]])
    assert top_k(scores, 5)[0].tolist() == [[1, 0, 2, 3, 5]]
    assert top_k(scores[:, ::-1].copy(), 5)[0].tolist() == [[4, 0, 2, 3, 5]]


def test_gtopfreq_is_popularity():
    rec = Recommender(GTopFreq().fit(HISTORY), catalog_for(HISTORY), None, False)
    idx, _ = rec.recommend_indices(np.array([0, 1]), 5)
    assert idx.tolist() == [[0, 1, 2, 3, 4]] * 2  # the same for everyone, by baskets per item


def test_ptopfreq_buys_again_then_fills_with_popularity():
    rec = Recommender(PTopFreq().fit(HISTORY), catalog_for(HISTORY), None, False)
    idx, _ = rec.recommend_indices(np.array([1]), 5)
    assert idx[0].tolist() == [3, 4, 0, 1, 2]  # own 3 (2 baskets), own 4 (1), then global popularity


def test_tifu_knn_user_vector_by_hand():
    """Different within- and group decays, so swapping them (or the group order) changes the numbers."""
    # user 0: baskets b1={0,1}, b2={0,2}, b3={0}; groups of 2 from the newest: [b2, b3] (newest), [b1].
    tier = TIFUKNN(n_neighbors=1, group_size=2, within_decay=0.9, group_decay=0.6, alpha=1.0)
    vectors = tier.user_vectors(HISTORY).toarray()
    n_groups = 2
    b3 = 0.9**0 / 2 * 0.6**0 / n_groups  # newest basket of the newest group (2 baskets)
    b2 = 0.9**1 / 2 * 0.6**0 / n_groups  # one basket before it, same group
    b1 = 0.9**0 / 1 * 0.6**1 / n_groups  # the older group, of 1 basket
    assert vectors[0, 0] == pytest.approx(b1 + b2 + b3) == pytest.approx(0.775)
    assert vectors[0, 2] == pytest.approx(b2) == pytest.approx(0.225)
    assert vectors[0, 1] == pytest.approx(b1) == pytest.approx(0.3)


def test_tifu_knn_borrows_from_nearest_user():
    tier = TIFUKNN(n_neighbors=1, group_size=2, within_decay=1.0, group_decay=1.0, alpha=0.5).fit(HISTORY)
    assert tier.neighbors[2, 0] == 0  # user 2 ({1, 2}) is closest to user 0
    scores = tier.score(np.array([2]))[0]
    assert scores[0] > 0 and scores[3] == 0  # item 0 comes from the neighbour, item 3 from nobody


def test_exclude_seen_store_filter_and_unknown_user():
    catalog = catalog_for(HISTORY, in_stock=[[0, 1, 5], [2, 3, 4]])
    rec = Recommender(PTopFreq().fit(HISTORY), catalog, HISTORY.user_item_counts(), exclude_seen=True)
    idx, _ = rec.recommend_indices(np.array([0]), 6)
    assert not set(idx[0]) & {0, 1, 2}  # user 0 bought 0, 1, 2
    idx, _ = rec.recommend_indices(np.array([1]), 6, store=0)
    assert set(idx[0][idx[0] >= 0]) <= {0, 1, 5}
    frame = rec.recommend(["nobody"], k=4)
    assert frame["item_id"].tolist() == ["i0", "i1", "i2", "i3"] and frame["rank"].tolist() == [1, 2, 3, 4]
    with pytest.raises(KeyError, match="unknown store_id"):
        rec.recommend(["u0"], store_id="s9")


def test_save_and_load_give_the_same_recommendations(tmp_path):
    tier = TIFUKNN(n_neighbors=1, group_size=2).fit(HISTORY)
    rec = Recommender(tier, catalog_for(HISTORY), HISTORY.user_item_counts(), exclude_seen=True, meta={"x": 1})
    loaded = Recommender.load(rec.save(tmp_path / "r"))
    users = ["u0", "u1", "u2", "stranger"]
    assert rec.recommend(users, 4).equals(loaded.recommend(users, 4))
    assert loaded.meta["x"] == 1 and loaded.tier.params == tier.params


def test_history_before_a_day_and_first_baskets_after_it():
    history = history_from([[[0, 1], [2], [3]], [[4]], [[5], [1]]], n_items=6)
    history.basket_day = np.array([0.0, 5.0, 9.0, 6.0, 1.0, 7.0])
    before = history.before(6.0)
    assert before.n_baskets == 3 and np.diff(before.user_ptr).tolist() == [2, 0, 1]
    assert before.items.tolist() == [0, 1, 2, 5]
    # user 1's only basket is on day 6: no history before it, so no target
    assert history.first_baskets(6.0, 10.0) == {0: {3}, 2: {1}}

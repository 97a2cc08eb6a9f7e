"""Baseline tiers served by the node's engine, TIFU-KNN and top-k, on tiny hand-made histories."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from edge.bundle import init_keys, load_private_key, load_public_key
from edge.engine import Engine
from models.baselines import TIFUKNN
from models.baskets import BasketHistory
from models.candidates import CandidateGenerator
from models.catalog import Catalog
from models.ranking import top_k
from models.tier_bundle import ServingData, TierScorer, lay_out, sign
from training.tiers import BASELINE_SCORERS


def history_from(baskets_per_user: list[list[list[int]]], n_items: int) -> BasketHistory:
    """[[basket items, ...] per user] in time order → BasketHistory."""
    user_ptr, basket_ptr, items, days = [0], [0], [], []
    for baskets in baskets_per_user:
        for day, basket in enumerate(baskets):
            items += basket
            basket_ptr.append(len(items))
            days.append(float(day))
        user_ptr.append(len(days))
    return BasketHistory(
        len(baskets_per_user), n_items, np.array(user_ptr), np.array(basket_ptr), np.array(items), np.array(days)
    )


def catalog_for(history: BasketHistory, in_stock: list[list[int]] | None = None) -> Catalog:
    stock = in_stock or [list(range(history.n_items))]
    rows = [s for s, items in enumerate(stock) for _ in items]
    cols = [i for items in stock for i in items]
    matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(stock), history.n_items))
    return Catalog(
        np.array([f"i{i}" for i in range(history.n_items)]),
        np.array([f"u{u}" for u in range(history.n_users)]),
        history.item_basket_counts().astype(np.float32),
        np.array([f"s{s}" for s in range(len(stock))]),
        matrix,
        matrix.copy(),
    )


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


def baseline_engine(folder, tier: str, exclude_seen: bool = False, in_stock=None, tifu: dict | None = None) -> Engine:
    """Baseline `tier` of HISTORY as a signed bundle, loaded by the engine as a node loads it."""
    tifu = tifu or dict(n_neighbors=1, group_size=2)
    catalog = catalog_for(HISTORY, in_stock)
    generator = CandidateGenerator(tifu).fit(HISTORY, cutoff_day=3.0)
    data = ServingData.of(
        generator,
        catalog,
        HISTORY,
        pd.DataFrame({"item_id": catalog.item_ids}),
        "2024-01-01 00:00:00",
        "2024-01-04 00:00:00",
        exclude_seen,
        data_hash="tiny",
    )
    private, public = init_keys(folder / "keys")
    lay_out(data, TierScorer(tier, BASELINE_SCORERS[tier]), folder / tier)
    sign(folder / tier, load_private_key(private), {})
    return Engine.load(folder / tier, load_public_key(public))


def items_for(engine: Engine, user: str, k: int, store: str | None = None) -> list[int]:
    return [int(r.item_id[1:]) for r in engine.recommend(user, store, k).items]


def test_gtopfreq_is_popularity(tmp_path):
    engine = baseline_engine(tmp_path, "g_topfreq")
    assert items_for(engine, "u0", 5) == items_for(engine, "u1", 5) == [0, 1, 2, 3, 4]  # by baskets per item


def test_ptopfreq_buys_again_then_fills_with_popularity(tmp_path):
    engine = baseline_engine(tmp_path, "p_topfreq")
    assert items_for(engine, "u1", 5) == [3, 4, 0, 1, 2]  # own 3 (2 baskets), own 4 (1), then global popularity
    # user 0: item 0 in 3 baskets; 1 and 2 in one each, tied on popularity too (2 baskets each)
    assert items_for(engine, "u0", 3)[0] == 0 and set(items_for(engine, "u0", 3)) == {0, 1, 2}


def test_tifu_knn_serves_its_own_ranking(tmp_path):
    """Through the engine, TIFU-KNN's answer starts with its items of positive score, best first."""
    engine = baseline_engine(tmp_path, "tifu_knn")
    tier = TIFUKNN(n_neighbors=1, group_size=2).fit(HISTORY)
    for user in range(HISTORY.n_users):
        scores = tier.score(np.array([user]))[0]
        positive = np.flatnonzero(scores > 0)
        best = positive[np.argsort(-scores[positive], kind="stable")].tolist()
        assert items_for(engine, f"u{user}", len(best)) == best


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


def test_exclude_seen_store_filter_and_unknown_shopper_and_store(tmp_path):
    engine = baseline_engine(tmp_path, "p_topfreq", exclude_seen=True, in_stock=[[0, 1, 5], [2, 3, 4]])
    assert not set(items_for(engine, "u0", 6)) & {0, 1, 2}  # user 0 bought 0, 1, 2
    assert set(items_for(engine, "u1", 6, store="s0")) <= {0, 1, 5}
    stranger = engine.recommend("nobody", None, 4)
    assert [r.item_id for r in stranger.items] == ["i0", "i1", "i2", "i3"] and not stranger.personalised
    unknown_store = engine.recommend("u1", "s9", 6)
    assert not unknown_store.known_store  # global popularity without u1's own items 3 and 4
    assert [r.item_id for r in unknown_store.items] == ["i0", "i1", "i2", "i5"]


def test_history_before_a_day_and_first_baskets_after_it():
    history = history_from([[[0, 1], [2], [3]], [[4]], [[5], [1]]], n_items=6)
    history.basket_day = np.array([0.0, 5.0, 9.0, 6.0, 1.0, 7.0])
    before = history.before(6.0)
    assert before.n_baskets == 3 and np.diff(before.user_ptr).tolist() == [2, 0, 1]
    assert before.items.tolist() == [0, 1, 2, 5]
    # user 1's only basket is on day 6: no history before it, so no target
    assert history.first_baskets(6.0, 10.0) == {0: {3}, 2: {1}}


def random_history(n_users: int = 60, n_items: int = 40, seed: int = 0) -> BasketHistory:
    rng = np.random.default_rng(seed)
    baskets = [
        [
            sorted(rng.choice(n_items, size=rng.integers(1, 6), replace=False).tolist())
            for _ in range(rng.integers(1, 8))
        ]
        for _ in range(n_users)
    ]
    history = history_from(baskets, n_items)
    history.basket_day = np.sort(rng.uniform(0, 50, history.n_baskets))  # any order within a user is fine
    for user in range(n_users):  # days increase within each user's baskets
        rows = slice(history.user_ptr[user], history.user_ptr[user + 1])
        history.basket_day[rows] = np.sort(history.basket_day[rows])
    return history


def test_one_shoppers_neighbours_are_the_batch_neighbours():
    """The node's one-row search (no sparse product) finds the neighbours the fit found."""
    history = random_history()
    tifu = TIFUKNN(n_neighbors=5, group_size=2).fit(history)
    for user in range(history.n_users):
        row = tifu.vectors[user]
        one = tifu._nearest_one(row.indices, row.data, user)
        assert sorted(one.tolist()) == sorted(tifu.neighbors[user].tolist()) and user not in one.tolist()


def test_explore_candidates_are_the_neighbours_best_new_items_ties_by_index():
    history = random_history(seed=1)
    generator = CandidateGenerator({"n_neighbors": 5, "group_size": 2}, n_explore=4).fit(history, 60.0)
    tifu = generator.tifu
    for user in range(history.n_users):
        bought = generator.counts.indices[generator.counts.indptr[user] : generator.counts.indptr[user + 1]]
        _, explore, _ = generator._tifu(generator.user_rows(user))
        scores = tifu.score(np.array([user]))[0]  # the dense reference: own + neighbours
        new = [i for i in np.flatnonzero(scores > 0) if i not in set(bought.tolist())]
        expected = sorted(new, key=lambda i: (-round(float(scores[i]), 6), i))[:4]
        assert explore.tolist() == expected

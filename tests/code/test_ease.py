"""EASE's closed form, its pruning and its per-shopper scores."""

import numpy as np

from models.ease import EASE
from models.rows import Rows


def bought(n_users: int = 300, n_items: int = 40, seed: int = 0) -> Rows:
    """Shoppers of two tastes: items 0-19 go together, and 20-39."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        taste = 20 * (user % 2)
        chosen = rng.choice(20, size=6, replace=False) + taste
        users += [user] * len(chosen)
        items += chosen.tolist()
    return Rows.from_entries(np.array(users), np.array(items), np.ones(len(users), np.float32), (n_users, n_items))


def test_unpruned_weights_equal_the_closed_form():
    x = bought()
    model = EASE(l2=10.0, keep=1000).fit(x)
    dense = x.to_scipy().toarray()
    inverse = np.linalg.inv(dense.T @ dense + 10.0 * np.eye(40))
    expected = -inverse / np.diag(inverse)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights.to_scipy().toarray(), expected, rtol=1e-4, atol=1e-6)


def test_a_shopper_is_offered_items_of_their_taste_and_batch_scores_match_one_shoppers():
    x = bought()
    model = EASE(l2=10.0, keep=8).fit(x)
    assert np.diff(model.weights.indptr).max() <= 8  # pruned to each item's 8 largest weights
    scores = model.scores(np.array([0, 1, 2]))
    scores[[0, 1, 2]] = -np.inf
    assert set(np.argsort(-scores)[:5]) <= set(range(20))
    np.testing.assert_allclose(model.score(x)[5], model.scores(x.row(5)[0]), rtol=1e-5)


def test_only_the_most_bought_items_are_modelled_and_the_state_round_trips():
    x = bought()
    model = EASE(l2=10.0, max_items=10).fit(x)
    modelled = np.flatnonzero(np.diff(model.weights.indptr))
    buyers = np.bincount(x.indices, minlength=40)
    assert len(modelled) == 10 and buyers[modelled].min() >= np.sort(buyers)[-10]
    again = EASE().load_state(model.state())
    np.testing.assert_array_equal(again.scores(np.array([3, 25])), model.scores(np.array([3, 25])))


def test_with_fewer_shoppers_than_items_the_weights_still_equal_the_closed_form():
    """A small shop: 30 shoppers, 40 items (EASE inverts on the shoppers' side)."""
    x = bought(n_users=30)
    model = EASE(l2=5.0, keep=1000).fit(x)
    dense = x.to_scipy().toarray()
    inverse = np.linalg.inv(dense.T @ dense + 5.0 * np.eye(40))
    expected = -inverse / np.diag(inverse)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights.to_scipy().toarray(), expected, rtol=1e-4, atol=1e-6)


def test_l2_is_chosen_on_validation_among_the_grid(movielens):
    from splits.holdout import holdout_splits
    from training.tuning import tune_ease_l2

    validation = holdout_splits(movielens, order="random", seed=0)["validation"]
    best, ndcgs = tune_ease_l2(validation, (3.0, 300.0))
    assert set(ndcgs) == {3.0, 300.0} and best == max(ndcgs, key=ndcgs.get)
    assert ndcgs[300.0] > 0.2  # MovieLens-100k's EASE: about 0.26 on this validation split

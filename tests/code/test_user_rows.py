"""Folding purchases into a shopper's rows gives what fitting on their whole history gives."""

import dataclasses

import numpy as np
import pytest

from models.baskets import BasketHistory
from models.candidates import CandidateGenerator
from models.user_rows import NEIGHBOUR_REFRESH, NEWEST, UserRows
from tests.code.test_baselines import random_history

TIFU = {"n_neighbors": 5, "group_size": 2}
CUTOFF = 50.0


def _fitted(seed: int = 0) -> tuple[CandidateGenerator, BasketHistory, np.ndarray]:
    history = random_history(n_users=60, n_items=40, seed=seed)
    groups = np.random.default_rng(seed).integers(-1, 6, history.n_items)  # some items without a category
    return CandidateGenerator(TIFU, n_explore=4).fit(history, CUTOFF, groups), history, groups


def _refit(generator: CandidateGenerator, history: BasketHistory, user: int, live: list) -> UserRows:
    """The reference: the user's bundle baskets plus `live` ((day, items)) fitted from scratch."""
    baskets, days = history.baskets_of(user) if user >= 0 else ([], np.zeros(0))
    baskets = list(baskets) + [np.array(sorted(items)) for _, items in live]
    days = np.r_[days, [day for day, _ in live]]
    one = BasketHistory.single_user(baskets, days, history.n_items)
    return generator.for_history(one, CUTOFF, np.array([user])).user_rows(0)


def _lines(history: BasketHistory, user: int, live: list) -> tuple[np.ndarray, np.ndarray]:
    lines, sizes = history.lines_of(user) if user >= 0 else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    extra = [np.array(sorted(items)) for _, items in live]
    return np.concatenate([lines, *extra]), np.r_[sizes, [len(b) for b in extra]].astype(np.int64)


def assert_same_rows(folded: UserRows, fitted: UserRows, neighbours: bool = True) -> None:
    for field in dataclasses.fields(UserRows):
        if field.name in ("newest", "neighbours_at") or (field.name == "neighbours" and not neighbours):
            continue
        got, want = getattr(folded, field.name), getattr(fitted, field.name)
        if field.name == "neighbours":
            assert sorted(got.tolist()) == sorted(want.tolist())
        else:
            np.testing.assert_allclose(np.asarray(got, float), np.asarray(want, float), rtol=1e-5, err_msg=field.name)


@pytest.mark.parametrize("user", [0, 7, 23, -1])  # -1: a shopper the fit never saw
def test_baskets_folded_in_one_by_one_equal_a_fit_on_the_whole_history(user):
    generator, history, groups = _fitted()
    rng = np.random.default_rng(user + 10)
    rows = generator.user_rows(user, history.newest_baskets(user, NEWEST)) if user >= 0 else UserRows.empty()
    live = []
    for step in range(12):
        day = CUTOFF + 1.5 * step + rng.uniform(0, 1)
        basket = set(rng.choice(40, size=rng.integers(1, 6), replace=False).tolist())
        live.append((day, basket))
        rows = rows.add_basket(np.array(sorted(basket)), day, groups)
        rows = rows.reweigh(*_lines(history, user, live), generator.tifu, user)
        reference = _refit(generator, history, user, live)
        refreshed = rows.neighbours_at == rows.n_baskets
        assert_same_rows(rows, reference, neighbours=refreshed)
        items, features = generator.candidate_rows(rows, day + 2.0)
        if refreshed:  # the same neighbours: the very same candidates and features as a refit
            want_items, want_features = generator.candidate_rows(reference, day + 2.0)
            assert items.tolist() == want_items.tolist()
            np.testing.assert_allclose(features, want_features, rtol=1e-4, atol=1e-6)


def test_items_joining_the_newest_basket_later_equal_one_basket_bought_at_its_last_time():
    generator, history, groups = _fitted(seed=3)
    user = 5
    rows = generator.user_rows(user, history.newest_baskets(user, NEWEST))
    rows = rows.add_basket(np.array([1, 2]), CUTOFF + 1.0, groups)
    rows = rows.extend_newest(np.array([2, 3, 17]), CUTOFF + 1.25, groups)  # 2 again: counted once
    live = [(CUTOFF + 1.25, {1, 2, 3, 17})]
    rows = rows.reweigh(*_lines(history, user, live), generator.tifu, user)
    assert_same_rows(rows, _refit(generator, history, user, live), neighbours=False)
    assert rows.newest[-1].tolist() == [1, 2, 3, 17] and rows.n_baskets == history.user_ptr[6] - history.user_ptr[5] + 1


def test_neighbours_are_searched_again_only_as_the_history_grows():
    generator, history, groups = _fitted()
    user = int(np.argmax(np.diff(history.user_ptr)))
    rows = generator.user_rows(user, history.newest_baskets(user, NEWEST))
    searched_at, live = rows.n_baskets, []
    for step in range(8):
        day = CUTOFF + step
        live.append((day, {step}))
        rows = rows.add_basket(np.array([step]), day, groups).reweigh(
            *_lines(history, user, live), generator.tifu, user
        )
        due = rows.n_baskets >= searched_at + max(1.0, NEIGHBOUR_REFRESH * searched_at)
        assert (rows.neighbours_at == rows.n_baskets) == due
        searched_at = rows.neighbours_at

"""Candidates and repurchase features on a hand-made history."""

import numpy as np
import pytest

from models.baselines import TIFUKNN
from models.candidates import FEATURE_NAMES, RepeatStats, build_candidates
from tests.code.test_baselines import history_from

# user 0 buys item 0 on days 0, 2, 4 and item 1 on day 0; user 1 buys 0 and 2; user 2 buys 3.
HISTORY = history_from([[[0, 1], [0], [0]], [[0, 2], [2]], [[3]]], n_items=5)
HISTORY.basket_day = np.array([0.0, 2.0, 4.0, 1.0, 5.0, 3.0])


def column(name):
    return FEATURE_NAMES.index(name)


def test_repeat_stats_by_hand():
    stats = RepeatStats.from_history(HISTORY)
    assert stats.counts.toarray()[0].tolist() == [3, 1, 0, 0, 0]
    row = slice(stats.counts.indptr[0], stats.counts.indptr[1])
    assert stats.first_day[row].tolist() == [0.0, 0.0] and stats.last_day[row].tolist() == [4.0, 0.0]
    assert stats.item_gap[0] == pytest.approx(2.0)  # only user 0 bought item 0 twice: (4-0)/2
    assert stats.item_gap[2] == pytest.approx(4.0)  # user 1: days 1 and 5
    assert np.isnan(stats.item_gap[1])
    assert stats.user_gap[0] == pytest.approx(2.0) and np.isnan(stats.user_gap[2])


def test_candidates_hold_repeat_then_explore_items_with_features():
    tifu = TIFUKNN(n_neighbors=1, group_size=2, alpha=0.5).fit(HISTORY)
    candidates = build_candidates(HISTORY, cutoff_day=10.0, users=np.array([0, 2]), tifu=tifu, n_explore=2)
    rows = slice(candidates.user_ptr[0], candidates.user_ptr[1])
    items = candidates.items[rows].tolist()
    features = candidates.features[rows]
    assert set(items[:2]) == {0, 1} and 2 in items[2:]  # own items first, then the neighbour's item 2
    first = items.index(0)
    assert features[first, column("log_count")] == pytest.approx(np.log1p(3))
    assert features[first, column("log_recency_days")] == pytest.approx(np.log1p(6.0))  # 10 - 4
    assert features[first, column("recency_over_own_gap")] == pytest.approx(6.0 / 2.0)
    assert features[first, column("bought_before")] == 1.0
    new = items.index(2)
    assert features[new, column("bought_before")] == 0.0 and features[new, column("log_count")] == 0.0
    assert features[new, column("tifu_score")] > 0
    assert candidates.features.dtype == np.float32 and not np.isnan(candidates.features).any()

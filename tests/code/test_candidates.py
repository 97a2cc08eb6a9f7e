"""Candidates and repurchase features on a hand-made history."""

import numpy as np
import pytest

from models.candidates import FEATURE_NAMES, CandidateGenerator, RepeatStats, build_candidates, labelled_candidates
from tests.code.test_baselines import history_from

# user 0 buys item 0 on days 0, 2, 4 and item 1 on day 0; user 1 buys 0 and 2; user 2 buys 3.
HISTORY = history_from([[[0, 1], [0], [0]], [[0, 2], [2]], [[3]]], n_items=5)
HISTORY.basket_day = np.array([0.0, 2.0, 4.0, 1.0, 5.0, 3.0])
GROUPS = np.array([0, 0, 1, 1, -1])  # items 0, 1 in category 0; 2, 3 in category 1; item 4 unknown
TIFU = dict(n_neighbors=1, group_size=2, alpha=0.5)


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
    assert stats.last_k[1][row].tolist() == [1, 0] and stats.last_k[3][row].tolist() == [3, 1]


def test_category_stats_count_a_basket_once():
    stats = RepeatStats.from_lines(HISTORY, GROUPS[HISTORY.items], 2)
    assert stats.counts.toarray().tolist() == [
        [3, 0],
        [1, 2],
        [0, 1],
    ]  # user 0's basket [0, 1] is one category-0 basket
    assert stats.item_gap[0] == pytest.approx(2.0) and stats.item_gap[1] == pytest.approx(4.0)


def test_timing_features_are_computed_at_each_request_time_never_before_the_cutoff():
    generator = CandidateGenerator(TIFU, n_explore=2).fit(HISTORY, 10.0, GROUPS)
    later = generator.build(np.array([0, 0, 0]), at=np.array([10.0, 13.5, 7.0]))
    rows = [slice(later.user_ptr[j], later.user_ptr[j + 1]) for j in range(3)]
    item_0 = [int(np.flatnonzero(later.items[r] == 0)[0]) for r in rows]
    recency = [later.features[r][i, column("recency_over_own_gap")] for r, i in zip(rows, item_0)]
    # item 0 was last bought on day 4 every 2 days: 3 gaps overdue at day 10, 4.75 at day 13.5;
    # day 7 is before the fit's cutoff, so it is asked as at the cutoff
    assert recency == pytest.approx([3.0, 4.75, 3.0])
    since_last = later.features[rows[1]][0, column("log_days_since_last_basket")]
    assert since_last == pytest.approx(np.log1p(9.5))
    untimed = ("log_count", "tifu_score", "share_last_3")
    for name in untimed:  # what does not depend on the clock does not move
        assert later.features[rows[0]][:, column(name)] == pytest.approx(later.features[rows[1]][:, column(name)])


def test_candidates_hold_repeat_then_explore_items_with_features():
    candidates = CandidateGenerator(TIFU, n_explore=2).fit(HISTORY, 10.0, GROUPS).build(np.array([0, 2]))
    assert candidates.users.tolist() == [0, 2]
    rows = slice(candidates.user_ptr[0], candidates.user_ptr[1])
    items = candidates.items[rows].tolist()
    features = candidates.features[rows]
    assert set(items[:2]) == {0, 1} and 2 in items[2:]  # own items first, then the neighbour's item 2
    first, second, new = items.index(0), items.index(1), items.index(2)
    assert features[first, column("log_count")] == pytest.approx(np.log1p(3))
    assert features[first, column("log_recency_days")] == pytest.approx(np.log1p(6.0))  # 10 - 4
    assert features[first, column("recency_over_own_gap")] == pytest.approx(6.0 / 2.0)
    assert features[first, column("bought_before")] == 1.0
    assert features[new, column("bought_before")] == 0.0 and features[new, column("log_count")] == 0.0
    assert features[new, column("tifu_score")] > 0
    # newest baskets: [0] on day 4; the newest three are all of user 0's baskets
    assert features[first, column("in_last_1")] == 1.0 and features[second, column("in_last_1")] == 0.0
    assert features[second, column("share_last_3")] == pytest.approx(1 / 3)
    assert features[first, column("share_last_10")] == pytest.approx(1.0)
    # item 0: buyers users 0 (3 baskets) and 1 (1 basket); item 2: user 1 twice
    assert features[first, column("item_repeat_share")] == pytest.approx(0.5)
    assert features[new, column("item_repeat_share")] == pytest.approx(1.0)
    assert features[first, column("item_log_mean_count")] == pytest.approx(np.log(2.0))
    # user 0: 4 lines, 2 of them repeats; 4/3 lines per basket; 6 days since the last basket, one every 2 days
    assert features[first, column("user_repeat_ratio")] == pytest.approx(0.5)
    assert features[first, column("user_log_basket_size")] == pytest.approx(np.log1p(4 / 3))
    assert features[first, column("since_last_over_user_interval")] == pytest.approx(3.0)
    assert features[first, column("tifu_rank")] == 0.0 and features[first, column("tifu_relative")] == pytest.approx(
        1.0
    )
    # category 0: in all 3 of user 0's baskets, last on day 4, every 2 days; items 0 and 1
    assert features[second, column("cat_log_count")] == pytest.approx(np.log1p(3))
    assert features[second, column("cat_log_recency")] == pytest.approx(np.log1p(6.0))
    assert features[second, column("cat_recency_over_gap")] == pytest.approx(3.0)
    assert features[second, column("cat_item_share")] == pytest.approx(1 / 3)
    assert features[second, column("cat_share_last_3")] == pytest.approx(1.0)
    assert features[second, column("cat_log_items")] == pytest.approx(np.log1p(2))
    assert features[second, column("cat_recency_over_global_gap")] == pytest.approx(3.0)  # median gap of category 0: 2
    assert features[new, column("cat_log_count")] == 0.0 and features[new, column("cat_recency_over_gap")] == 0.0
    assert candidates.features.shape[1] == len(FEATURE_NAMES)
    assert candidates.features.dtype == np.float32 and np.isfinite(candidates.features).all()


def test_one_user_build_equals_batch_build_and_state_round_trips():
    generator = CandidateGenerator(TIFU, n_explore=2).fit(HISTORY, 10.0, GROUPS)
    batch = generator.build(np.array([2, 0, 1]))
    reloaded = CandidateGenerator(**generator.params).load_state({k: np.array(v) for k, v in generator.state().items()})
    for j, user in enumerate(batch.users):
        rows = slice(batch.user_ptr[j], batch.user_ptr[j + 1])
        for gen in (generator, reloaded):
            one = gen.build(np.array([user]))
            assert one.items.tolist() == batch.items[rows].tolist()
            np.testing.assert_array_equal(one.features, batch.features[rows])
    assert generator.param_count() > 0 and generator.params["tifu_params"] == TIFU


def test_without_item_groups_category_features_are_zero():
    candidates = build_candidates(HISTORY, 10.0, np.array([0, 1]), TIFU)
    cat = [column(n) for n in FEATURE_NAMES if n.startswith("cat_")]
    assert cat and not candidates.features[:, cat].any() and np.isfinite(candidates.features).all()


def test_labelled_candidates_pass_item_groups():
    data = labelled_candidates(HISTORY, 10.0, {0: {1, 2}}, TIFU, item_groups=GROUPS, n_explore=2)
    assert data.labels.sum() == 2 and data.basket_sizes.tolist() == [2]
    assert data.features[:, column("cat_log_count")].max() == pytest.approx(np.log1p(3))


def test_a_shoppers_own_history_rebuilds_the_same_candidates_and_a_new_basket_moves_them():
    fitted = CandidateGenerator(TIFU, n_explore=2).fit(HISTORY, 10.0, GROUPS)
    expected = fitted.build(np.array([0]))
    baskets, days = HISTORY.baskets_of(0)
    alone = fitted.for_history(HISTORY.single_user(baskets, days, HISTORY.n_items), 10.0, np.array([0]))
    same = alone.build(np.array([0]))
    assert same.items.tolist() == expected.items.tolist()
    np.testing.assert_allclose(same.features, expected.features, rtol=1e-6)
    # a purchase of item 1 on day 9: its count, recency and newest-basket flag follow at once
    later = fitted.for_history(
        HISTORY.single_user(baskets + [np.array([1])], np.r_[days, 9.0], HISTORY.n_items), 10.0, np.array([0])
    ).build(np.array([0]))
    row = later.items.tolist().index(1)
    assert later.features[row, column("log_count")] == pytest.approx(np.log1p(2))
    assert later.features[row, column("log_recency_days")] == pytest.approx(np.log1p(1.0))
    assert later.features[row, column("in_last_1")] == 1.0


def test_discovery_candidates_are_eases_best_new_items_and_survive_the_bundle_state():
    from tests.code.test_ease import bought

    x = bought(n_users=60)
    history = history_from([[x.row(u)[0].tolist()] for u in range(60)], n_items=40)
    history.basket_day = np.zeros(60)
    generator = CandidateGenerator(dict(n_neighbors=2, group_size=1, alpha=0.9), n_explore=2, n_discovery=5)
    generator.fit(history, 1.0)
    assert generator.ease is not None
    items, features = generator.candidate_rows(generator.user_rows(0), 1.0)
    mine = set(x.row(0)[0].tolist())
    scores = generator.ease.scores(np.array(sorted(mine)))
    new = [i for i in items.tolist() if i not in mine]
    expected = [i for i in np.argsort(-scores, kind="stable").tolist() if i not in mine and scores[i] > 0]
    assert set(expected[:5]) <= set(new) and len(new) <= 2 + 5
    np.testing.assert_allclose(features[:, column("ease_score")], scores[items], rtol=1e-5)
    by_ease = np.argsort(-scores[items], kind="stable")  # the scale-free forms of the same order
    np.testing.assert_allclose(features[by_ease, column("ease_rank")], np.log1p(np.arange(len(items))), rtol=1e-6)
    assert features[by_ease[0], column("ease_relative")] == pytest.approx(1.0)
    assert (features[:, column("ease_relative")] <= 1.0 + 1e-6).all()
    again = CandidateGenerator(**generator.params).load_state(generator.state(serving=True))
    again_items, again_features = again.candidate_rows(again.user_rows(0), 1.0)
    np.testing.assert_array_equal(again_items, items)
    np.testing.assert_allclose(again_features, features)
    plain = CandidateGenerator(dict(n_neighbors=2, group_size=1, alpha=0.9), n_explore=2).fit(history, 1.0)
    assert plain.ease is None and not plain.candidate_rows(plain.user_rows(0), 1.0)[1][:, column("ease_score")].any()

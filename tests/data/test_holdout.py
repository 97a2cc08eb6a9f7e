"""The per-user holdout protocol for one-off data, on MovieLens-100k."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_contracts.learnability import MIN_HOLDOUT_LINES
from splits.holdout import holdout_splits, nested_holdouts


def lines_of(split) -> dict[int, set[int]]:
    counts = split.history.user_item_counts()
    return {u: set(counts.indices[counts.indptr[u] : counts.indptr[u + 1]].tolist()) for u in range(counts.shape[0])}


def test_each_user_holds_out_their_newest_tenth_and_validation_holds_out_from_the_test_history(movielens):
    splits = holdout_splits(movielens, order="time")
    test, validation, deploy = splits["test"], splits["validation"], splits["deploy"]
    ratings = movielens.events.groupby("user_id").size()
    assert ratings.min() >= MIN_HOLDOUT_LINES and len(test.targets) == len(ratings) == test.history.n_users
    ids = test.catalog.user_ids
    for user, held in test.targets.items():
        assert len(held) == max(round(0.1 * ratings[ids[user]]), 1)
    history = lines_of(test)
    assert all(not (held & history[u]) for u, held in test.targets.items())  # nobody rates a film twice
    assert len(test.history.items) + sum(map(len, test.targets.values())) == 100_000
    # by time: every held-out rating of a user is at or after their newest rating kept as history
    events = movielens.events.assign(user_id=movielens.events["user_id"].astype(str))
    user = ids[0]
    mine = events[events["user_id"] == user]
    held_items = {str(test.catalog.item_ids[i]) for i in test.targets[0]}
    kept = mine[~mine["item_id"].isin(held_items)]
    assert mine[mine["item_id"].isin(held_items)]["timestamp"].min() >= kept["timestamp"].max()
    first_held = mine[mine["item_id"].isin(held_items)]["timestamp"].min()
    asked = pd.Timestamp(test.requests[0].at, unit="s")  # when that day's session (basket) began
    assert asked <= first_held and asked == mine[mine["timestamp"].dt.date == first_held.date()]["timestamp"].min()
    assert set(validation.targets) == set(test.targets)
    assert all(validation.targets[u] <= history[u] for u in validation.targets)
    assert not deploy.targets and len(deploy.history.items) == 100_000


def test_a_random_holdout_is_fixed_by_its_seed(movielens):
    first = holdout_splits(movielens, order="random", seed=3)["test"].targets
    again = holdout_splits(movielens, order="random", seed=3)["test"].targets
    other = holdout_splits(movielens, order="random", seed=4)["test"].targets
    by_time = holdout_splits(movielens, order="time")["test"].targets
    assert first == again and first != other and first != by_time
    assert [len(first[u]) for u in sorted(first)] == [len(by_time[u]) for u in sorted(by_time)]
    assert np.mean([len(v) for v in first.values()]) > 10


def test_nested_holdouts_step_back_one_share_per_round_and_never_train_on_their_targets(movielens):
    """The rankers' training lists of a holdout split: round 1 holds out the newest tenth of the
    split's history, round 2 the tenth before it, each with only the older lines as history."""
    test = holdout_splits(movielens, order="time")["test"]
    rounds = nested_holdouts(test.history, rounds=2)
    assert len(rounds) == 2
    (first_history, first, first_skipped), (second_history, second, second_skipped) = (
        (held.history, held.targets, held.skipped) for held in rounds
    )
    assert not first_skipped and second_skipped == first  # round 2 never offers round 1's targets
    assert set(first) == set(range(test.history.n_users))  # MovieLens users all have 20+ ratings
    for user in (0, 1, 500):
        items, sizes = test.history.lines_of(user)
        days = np.repeat(test.history.baskets_of(user)[1], sizes)
        held = max(round(0.1 * len(items)), 1)
        assert len(first[user]) == len(second[user]) == held and not first[user] & second[user]
        kept, kept_second = set(first_history.lines_of(user)[0].tolist()), set(second_history.lines_of(user)[0])
        assert kept | first[user] == set(items.tolist()) and not kept & first[user]
        assert kept_second | second[user] == kept and not kept_second & second[user]
        day_of = dict(zip(items.tolist(), days))
        assert min(day_of[i] for i in first[user]) >= max(day_of[i] for i in kept)  # the newest lines
        assert min(day_of[i] for i in second[user]) >= max(day_of[i] for i in kept_second)
    assert sum(map(len, first.values())) + len(first_history.items) == len(test.history.items)


def test_random_nested_holdouts_hold_out_any_line_and_skip_the_later_rounds(movielens):
    """In random order a round's targets come from anywhere in a user's lines, not the newest;
    the items of the rounds after it are the user's `skipped` ones, never offered as candidates."""
    from models.candidates import labelled_candidates

    test = holdout_splits(movielens, order="random", seed=0)["test"]
    rounds = nested_holdouts(test.history, rounds=3, order="random")
    user = 7
    items, sizes = test.history.lines_of(user)
    days = dict(zip(items.tolist(), np.repeat(test.history.baskets_of(user)[1], sizes)))
    newest = sorted(items.tolist(), key=days.get)[-len(rounds[0].targets[user]) :]
    assert set(newest) != rounds[0].targets[user]  # not simply the newest tenth
    third = rounds[2]
    assert third.skipped[user] == rounds[0].targets[user] | rounds[1].targets[user]
    kept = set(third.history.lines_of(user)[0].tolist())
    assert kept | third.targets[user] | third.skipped[user] == set(items.tolist())
    lists = labelled_candidates(
        third.history,
        test.cutoff_day,
        {user: third.targets[user]},
        {},
        test.catalog.item_groups,
        withheld=third.skipped,
        n_repeat=0,
        n_discovery=100,
    )
    assert len(lists.items) > 100 and not set(lists.items.tolist()) & third.skipped[user]

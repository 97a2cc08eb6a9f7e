"""The ranker learns the repurchase signal from labelled candidate lists."""

from types import SimpleNamespace

import numpy as np
import pytest

from models.candidates import FEATURE_NAMES, LabelledCandidates, labelled_candidates
from models.ranker import CandidateRanker
from models.training import ndcg_at_k, train_ranker
from tests.code.test_baselines import history_from


def synthetic_lists(n_lists: int, size: int, seed: int) -> LabelledCandidates:
    """Lists where the positive is the candidate most 'due' for repurchase (recency ≈ own gap)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_lists * size, len(FEATURE_NAMES))).astype(np.float32)
    due = FEATURE_NAMES.index("recency_over_own_gap")
    group = np.repeat(np.arange(n_lists), size)
    labels = np.zeros(n_lists * size, np.float32)
    for g in range(n_lists):
        rows = np.arange(g * size, (g + 1) * size)
        labels[rows[np.argmin(np.abs(features[rows, due] - 1.0))]] = 1
    return LabelledCandidates(
        features, rng.integers(0, 50, n_lists * size), group, labels, np.ones(n_lists, int), np.arange(n_lists)
    )


def test_ndcg_by_hand():
    data = LabelledCandidates(
        np.zeros((4, 1), np.float32),
        np.arange(4),
        np.array([0, 0, 1, 1]),
        np.array([0, 1, 1, 0], np.float32),
        np.array([2, 1]),
        np.array([0, 1]),
    )
    value = ndcg_at_k(np.array([0.9, 0.1, 0.9, 0.1]), data)
    assert value == pytest.approx(((1 / np.log2(3)) / (1 + 1 / np.log2(3)) + 1.0) / 2)


def test_training_beats_random_ranking_on_held_out_lists():
    train, validation = synthetic_lists(400, 20, seed=0), synthetic_lists(100, 20, seed=1)
    model = CandidateRanker(len(FEATURE_NAMES), n_items=50, item_dim=2, hidden=32, dropout=0.0)
    seen = []
    history = train_ranker(model, train, validation, epochs=15, lr=0.01, on_epoch=lambda e, v: seen.append(e))
    assert seen == list(range(15))
    random_ndcg = ndcg_at_k(np.random.default_rng(3).normal(size=len(validation.items)), validation)
    assert history[-1] > 2 * random_ndcg


def test_labelled_candidates_use_only_baskets_before_the_cutoff():
    history = history_from([[[0], [0, 1], [2]], [[1], [2, 3]]], n_items=5)
    history.basket_day = np.array([0.0, 3.0, 9.0, 1.0, 2.0])
    data = labelled_candidates(history, cutoff_day=5.0, targets={0: {2, 3}}, tifu_params={"n_neighbors": 1})
    # Before day 5 shopper 0 bought items 0 and 1 (the day-9 basket with item 2 is after the
    # cutoff); 2 and 3 are explored (their neighbour bought them) and are the target. Item 4,
    # which nobody bought, is no candidate: explore slots hold only items neighbours bought.
    bought_before = data.features[:, FEATURE_NAMES.index("bought_before")]
    rows = sorted(zip(data.items.tolist(), data.labels.tolist(), bought_before.tolist()))
    assert rows == [(0, 0.0, 1.0), (1, 0.0, 1.0), (2, 1.0, 0.0), (3, 1.0, 0.0)]
    assert data.basket_sizes.tolist() == [2] and data.group.tolist() == [0, 0, 0, 0]


def test_a_distilled_student_follows_its_teacher_not_only_the_labels():
    """A teacher that ranks by another feature than the labels do: the student distilled from it
    picks the teacher's top candidate far more often than the same student trained on labels alone
    (a `fit_ranker` that ignored its teacher would make the two the same)."""
    from dataclasses import replace

    from models.training import score
    from training.data import RankerData, RankerSpec, fit_ranker
    from training.distill import STUDENTS

    train, validation = synthetic_lists(300, 20, seed=0), synthetic_lists(100, 20, seed=1)
    taste = FEATURE_NAMES.index("tifu_own")  # the teacher's own idea of the best candidate

    def relabelled(lists: LabelledCandidates) -> LabelledCandidates:
        labels = np.zeros_like(lists.labels)
        for g in np.unique(lists.group):
            rows = np.flatnonzero(lists.group == g)
            labels[rows[np.argmax(lists.features[rows, taste])]] = 1
        return LabelledCandidates(lists.features, lists.items, lists.group, labels, lists.basket_sizes, lists.users)

    teacher = CandidateRanker(len(FEATURE_NAMES), n_items=50, item_dim=2, hidden=32, dropout=0.0)
    train_ranker(teacher, relabelled(train), None, epochs=15, lr=0.01)
    teacher.eval()

    def agreement(model) -> float:
        mine, theirs = score(model, validation), score(teacher, validation)
        groups = np.unique(validation.group)
        return float(
            np.mean(
                [np.argmax(mine[validation.group == g]) == np.argmax(theirs[validation.group == g]) for g in groups]
            )
        )

    data = RankerData(SimpleNamespace(history=SimpleNamespace(n_items=50)), train, None, None, 0.0)
    spec = RankerSpec(STUDENTS["edge"]["architecture"], lr=0.01, weight_decay=0.0, epochs=10, distill_weight=0.9)
    distilled, _ = fit_ranker(spec, data, teacher_scores=score(teacher, train))
    labels_only, _ = fit_ranker(replace(spec, distill_weight=0.0), data)
    assert agreement(distilled) > agreement(labels_only) + 0.3, (agreement(distilled), agreement(labels_only))


def test_training_and_validation_lists_see_their_baskets_own_time():
    """Each list's timing features are those of a node asked when the target basket starts."""
    import pandas as pd

    from splits.temporal import Split, TargetRequest
    from training.data import generator_settings, ranker_data

    # user 0 buys item 0 weekly (days 0, 7, 14), then on day 27 (a training target after the weekly
    # cutoff 23) and on day 36 (the validation target after the split's cutoff 30)
    history = history_from([[[0], [0], [0], [0, 1]], [[1], [1]]], n_items=3)
    history.basket_day = np.array([0.0, 7.0, 14.0, 27.0, 1.0, 2.0])
    cutoff = pd.Timestamp("2020-01-31")
    origin = cutoff - pd.Timedelta(days=30)
    split = Split(
        "validation",
        cutoff,
        cutoff + pd.Timedelta(days=7),
        30.0,
        history,
        SimpleNamespace(item_groups=None),
        {0: {0}},
        {},
        {0: TargetRequest(None, (origin + pd.Timedelta(days=36)).tz_localize("UTC").timestamp())},
    )
    data = ranker_data(split, 1, generator_settings({"n_neighbors": 1}), with_validation=True)
    recency = FEATURE_NAMES.index("log_recency_days")
    for lists, last_bought, asked in ((data.train, 14.0, 27.0), (data.validation, 27.0, 36.0)):
        row = np.flatnonzero((lists.items == 0) & (lists.users[lists.group] == 0))[0]
        assert lists.features[row, recency] == pytest.approx(np.log1p(asked - last_bought), rel=1e-5)

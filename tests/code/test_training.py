"""The ranker learns the repurchase signal from labelled candidate lists."""

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
    return LabelledCandidates(features, rng.integers(0, 50, n_lists * size), group, labels,
                              np.ones(n_lists, int), np.arange(n_lists))


def test_ndcg_by_hand():
    data = LabelledCandidates(np.zeros((4, 1), np.float32), np.arange(4), np.array([0, 0, 1, 1]),
                              np.array([0, 1, 1, 0], np.float32), np.array([2, 1]), np.array([0, 1]))
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
    history = history_from([[[0], [0, 1], [2]], [[1], [1]]], n_items=4)
    history.basket_day = np.array([0.0, 3.0, 9.0, 1.0, 2.0])
    data = labelled_candidates(history, cutoff_day=5.0, targets={0: {2, 3}}, tifu_params={"n_neighbors": 1})
    assert set(data.items) >= {0, 1} and 2 not in set(data.items[data.features[:, FEATURE_NAMES.index("bought_before")] == 1])
    assert data.basket_sizes.tolist() == [2] and data.labels.sum() == float(2 in set(data.items)) + float(3 in set(data.items))

"""The LightGBM teacher: it learns the repurchase signal, stops when validation stops improving,
and its ONNX export scores exactly as LightGBM does."""

import numpy as np
import pytest

from models.candidates import FEATURE_NAMES
from models.scorers import OnnxScorer
from models.training import ndcg_at_k
from tests.code.test_training import synthetic_lists
from training.boosted import BoostedSpec, boosted_scores, export_boosted_onnx, fit_boosted, tree_nodes, with_positives

SPEC = BoostedSpec(num_leaves=7, learning_rate=0.1, min_data_in_leaf=5, rounds=60)


def test_the_teacher_beats_random_ranking_on_held_out_lists():
    train, validation = synthetic_lists(300, 20, seed=0), synthetic_lists(100, 20, seed=1)
    rounds = []
    booster, history = fit_boosted(SPEC, train, validation, on_round=lambda r, _: rounds.append(r))
    assert rounds == list(range(1, len(history) + 1)) and 1 <= len(history) <= SPEC.rounds
    assert booster.best_iteration == int(np.argmax(history)) + 1  # the best round is what predicts
    random_ndcg = ndcg_at_k(np.random.default_rng(3).normal(size=len(validation.items)), validation)
    assert ndcg_at_k(boosted_scores(booster, validation.features), validation) > 2 * random_ndcg
    assert max(history) == pytest.approx(ndcg_at_k(boosted_scores(booster, validation.features), validation))


def test_lists_without_a_target_among_their_candidates_are_not_trained_on():
    lists = synthetic_lists(10, 5, seed=0)
    lists.labels[lists.group == 3] = 0
    kept = with_positives(lists)
    assert len(kept.basket_sizes) == 9 and kept.labels.reshape(9, 5).sum(axis=1).min() == 1


def test_the_onnx_export_scores_as_lightgbm_does(tmp_path):
    train = synthetic_lists(200, 20, seed=0)
    booster, _ = fit_boosted(SPEC, train)
    onnx = OnnxScorer(export_boosted_onnx(booster, tmp_path / "model.onnx"))
    scores = onnx(train.features[:300], train.items[:300])
    assert scores.shape == (300,)
    assert scores == pytest.approx(boosted_scores(booster, train.features[:300]), abs=1e-4)
    assert booster.num_trees() == SPEC.rounds and SPEC.rounds < tree_nodes(booster) <= SPEC.rounds * (2 * 7 - 1)


def test_an_item_rises_as_the_shopper_comes_due_for_it():
    """Trained where the bought item is the one most due (days since the last purchase ≈ the
    shopper's usual interval for it), the teacher scores the same candidate higher as the clock
    moves from a quarter of its interval to the interval."""
    train, validation = synthetic_lists(400, 20, seed=0), synthetic_lists(100, 20, seed=1)
    booster, _ = fit_boosted(SPEC, train, validation)
    due = FEATURE_NAMES.index("recency_over_own_gap")
    rows = np.repeat(validation.features[:50], 4, axis=0)
    rows[:, due] = np.tile([0.25, 0.5, 0.75, 1.0], 50)
    scores = boosted_scores(booster, rows).reshape(50, 4)
    assert (np.diff(scores, axis=1) >= 0).mean() > 0.9 and (scores[:, 3] > scores[:, 0]).all()

"""Metrics against values computed by hand."""

import math

import pytest

from models.metrics import METRIC_NAMES, evaluate, user_metrics


def test_user_metrics_by_hand():
    # basket {a, b, c}; hits at ranks 1 and 3; a was bought before (repeat), b and c are new.
    m = user_metrics(["a", "x", "b", "y"], basket={"a", "b", "c"}, history={"a", "z"}, k=10)
    assert m["precision_at_10"] == pytest.approx(2 / 10)
    assert m["recall_at_10"] == pytest.approx(2 / 3)
    assert m["f1_at_10"] == pytest.approx(2 * 0.2 * (2 / 3) / (0.2 + 2 / 3))
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg_at_10"] == pytest.approx(dcg / idcg)
    assert m["hr_at_10"] == 1.0
    assert m["recall_repeat_at_10"] == 1.0  # a
    assert m["recall_explore_at_10"] == pytest.approx(1 / 2)  # b of {b, c}


def test_idcg_is_capped_at_k():
    basket = {str(i) for i in range(20)}
    m = user_metrics([str(i) for i in range(10)], basket, set(), k=10)
    assert m["ndcg_at_10"] == pytest.approx(1.0)
    assert m["recall_at_10"] == pytest.approx(0.5)


def test_only_first_k_count():
    m = user_metrics(["x"] * 10 + ["a"], {"a"}, set(), k=10)
    assert m["hr_at_10"] == 0.0 and m["ndcg_at_10"] == 0.0


def test_repeat_explore_undefined_when_absent():
    m = user_metrics(["a"], {"a"}, history=set(), k=10)
    assert m["recall_repeat_at_10"] is None and m["recall_explore_at_10"] == 1.0


def test_evaluate_averages_and_missing_user_scores_zero():
    baskets = {"u1": {"a"}, "u2": {"b"}}
    result = evaluate({"u1": ["a", "c"]}, baskets, {"u1": {"a"}}, catalog_size=4, k=10)
    assert set(METRIC_NAMES) <= set(result)
    assert result["hr_at_10"] == pytest.approx(0.5)
    assert result["precision_at_10"] == pytest.approx(0.05)
    assert result["recall_repeat_at_10"] == 1.0  # only u1 has a repeat item
    assert result["recall_explore_at_10"] == 0.0  # u2's b is new and missed
    assert result["coverage_at_10"] == pytest.approx(2 / 4)  # a and c recommended

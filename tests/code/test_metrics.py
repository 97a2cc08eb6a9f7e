"""Metrics against values computed by hand."""

import math

import pytest

from models.metrics import METRIC_NAMES, evaluate, user_metrics

# What the product promises (README: every tier's run logs `precision_at_10 … coverage_at_10`),
# written out here so that renaming or dropping a metric fails a test.
PROMISED_METRICS = (
    "precision_at_10",
    "recall_at_10",
    "f1_at_10",
    "ndcg_at_10",
    "hr_at_10",
    "recall_repeat_at_10",
    "recall_explore_at_10",
    "coverage_at_10",
)


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


def test_repeat_recall_is_the_share_of_the_repeat_items_recommended():
    # repeat items {a, b, c} (bought before), one of them recommended; explore items {d, e}, both.
    m = user_metrics(["a", "d", "e", "x"], basket={"a", "b", "c", "d", "e"}, history={"a", "b", "c", "z"}, k=10)
    assert m["recall_repeat_at_10"] == pytest.approx(1 / 3)
    assert m["recall_explore_at_10"] == 1.0
    assert m["recall_at_10"] == pytest.approx(3 / 5)


def test_idcg_is_capped_at_k():
    basket = {str(i) for i in range(20)}
    m = user_metrics([str(i) for i in range(10)], basket, set(), k=10)
    assert m["ndcg_at_10"] == pytest.approx(1.0)
    assert m["recall_at_10"] == pytest.approx(0.5)


def test_only_first_k_count():
    m = user_metrics(["x"] * 10 + ["a"], {"a"}, set(), k=10)
    assert m["hr_at_10"] == 0.0 and m["ndcg_at_10"] == 0.0
    assert m["precision_at_10"] == 0.0 and m["recall_at_10"] == 0.0 and m["f1_at_10"] == 0.0


def test_the_protocols_k_is_the_default():
    # 11 recommendations, only the 11th is in the basket: outside the top 10, so no hit.
    eleven = [f"x{i}" for i in range(10)] + ["a"]
    m = user_metrics(eleven, {"a"}, set())
    assert m["hr_at_10"] == 0.0 and m["recall_at_10"] == 0.0
    assert user_metrics(["a"], {"a"}, set())["precision_at_10"] == pytest.approx(1 / 10)
    result = evaluate({"u": eleven}, {"u": {"a"}}, {}, catalog_size=100)
    assert result["hr_at_10"] == 0.0
    assert result["coverage_at_10"] == pytest.approx(10 / 100)  # the 11th item is not recommended


def test_evaluate_uses_its_k_for_every_user():
    # k = 2: u1's hit at rank 2 counts, u2's at rank 3 does not; precision is hits / 2.
    result = evaluate(
        {"u1": ["x", "a", "y"], "u2": ["x", "y", "b"]}, {"u1": {"a"}, "u2": {"b"}}, {}, catalog_size=10, k=2
    )
    assert result["hr_at_10"] == pytest.approx(0.5)
    assert result["precision_at_10"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["coverage_at_10"] == pytest.approx(3 / 10)  # x, a (u1's top 2) and y (u2's); not b


def test_a_user_with_an_empty_basket_scores_zero():
    m = user_metrics(["a", "b"], set(), {"a"}, k=10)
    for name in ("precision_at_10", "recall_at_10", "f1_at_10", "ndcg_at_10", "hr_at_10"):
        assert m[name] == 0.0, name
    assert m["recall_repeat_at_10"] is None and m["recall_explore_at_10"] is None


def test_repeat_explore_undefined_when_absent():
    m = user_metrics(["a"], {"a"}, history=set(), k=10)
    assert m["recall_repeat_at_10"] is None and m["recall_explore_at_10"] == 1.0


def test_evaluate_averages_and_missing_user_scores_zero():
    baskets = {"u1": {"a"}, "u2": {"b"}}
    result = evaluate({"u1": ["a", "c"]}, baskets, {"u1": {"a"}}, catalog_size=4, k=10)
    assert set(result) == {*PROMISED_METRICS, "n_users"}
    assert result["n_users"] == 2
    assert result["hr_at_10"] == pytest.approx(0.5)
    assert result["precision_at_10"] == pytest.approx(0.05)
    assert result["recall_repeat_at_10"] == 1.0  # only u1 has a repeat item
    assert result["recall_explore_at_10"] == 0.0  # u2's b is new and missed
    assert result["coverage_at_10"] == pytest.approx(2 / 4)  # a and c recommended


def test_the_tracked_metric_names_are_the_promised_ones():
    """METRIC_NAMES is what tasks.track logs for every tier: the promised names, in that order."""
    assert METRIC_NAMES == PROMISED_METRICS


def test_a_metric_no_user_defines_averages_to_zero_not_nan():
    # nobody has a repeat item (empty histories); an empty catalog has no coverage.
    result = evaluate({"u1": ["a"], "u2": ["c"]}, {"u1": {"a"}, "u2": {"b"}}, {}, catalog_size=0)
    assert result["recall_repeat_at_10"] == 0.0
    assert result["recall_explore_at_10"] == pytest.approx(0.5)
    assert result["coverage_at_10"] == 0.0
    nobody = evaluate({}, {}, {}, catalog_size=5)
    assert nobody["n_users"] == 0
    assert all(nobody[name] == 0.0 for name in PROMISED_METRICS)

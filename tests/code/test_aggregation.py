"""Robust aggregation against a poisoned node, through the server's own strategies (`STRATEGIES`
wrapped by `audited`): FedAvg is pulled away by one node sending huge weights; FedTrimmedAvg,
FedMedian and Krum stay with the honest nodes."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from federated.privacy import PrivacyLedger
from federated.server_app import STRATEGIES, audited


def replies(updates: list[np.ndarray]) -> list[Message]:
    """Each node's training reply (its model as one array, 100 examples each)."""
    out = []
    for node, weights in enumerate(updates, start=1):
        sent = Message(RecordDict({}), dst_node_id=node, message_type="train")
        content = RecordDict({"arrays": ArrayRecord([weights]), "metrics": MetricRecord({"num-examples": 100})})
        out.append(Message(content, reply_to=sent))
    return out


def aggregate(name: str, updates: list[np.ndarray]) -> np.ndarray:
    options = {"num_malicious_nodes": 1} if name == "krum" else {}
    strategy = audited(STRATEGIES[name], PrivacyLedger(1e-5, 0.0), {}, private=False)(
        fraction_evaluate=0.0, min_train_nodes=len(updates), min_available_nodes=len(updates), **options
    )
    arrays, _ = strategy.aggregate_train(1, replies(updates))
    return arrays.to_numpy_ndarrays()[0]


@pytest.fixture(scope="module")
def poisoned() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    honest = [np.ones(50, np.float32) + rng.normal(0, 0.01, 50).astype(np.float32) for _ in range(4)]
    return honest + [np.full(50, 1000.0, np.float32)]  # one node scales its update 1,000×


def test_fedavg_is_pulled_away_by_one_poisoned_node(poisoned):
    assert np.abs(aggregate("fedavg", poisoned) - 1).max() > 100


@pytest.mark.parametrize("name", ["fedtrimmedavg", "fedmedian", "krum"])
def test_robust_strategies_stay_with_the_honest_nodes(name, poisoned):
    assert np.abs(aggregate(name, poisoned) - 1).max() < 0.05


def test_a_failed_node_fails_the_round_rather_than_releasing_a_partial_model(poisoned):
    from flwr.app import Error

    broken = replies(poisoned[:4])
    sent = Message(RecordDict({}), dst_node_id=9, message_type="train")
    broken.append(Message(Error(code=1, reason="out of memory"), reply_to=sent))
    strategy = audited(STRATEGIES["fedmedian"], PrivacyLedger(1e-5, 0.0), {}, private=False)(
        fraction_evaluate=0.0, min_train_nodes=5, min_available_nodes=5
    )
    with pytest.raises(RuntimeError, match="out of memory"):
        strategy.aggregate_train(1, broken)

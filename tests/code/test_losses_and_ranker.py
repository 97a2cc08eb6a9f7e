"""Ranking losses against hand computation, and the ranker's shapes and sizes."""

import math

import pytest
import torch

from models.losses import distillation_loss, group_log_softmax, listwise_softmax_loss
from models.ranker import CandidateRanker

GROUP = torch.tensor([0, 0, 0, 1, 1])
SCORES = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0])


def test_group_log_softmax_by_hand():
    log_p = group_log_softmax(SCORES, GROUP)
    assert log_p[0].item() == pytest.approx(1 - math.log(math.e + 2))
    assert log_p[3].item() == pytest.approx(math.log(0.5))


def test_listwise_loss_by_hand_ignores_groups_without_positives():
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    expected = -((1 - math.log(math.e + 2)) + (0 - math.log(math.e + 2))) / 2
    assert listwise_softmax_loss(SCORES, labels, GROUP).item() == pytest.approx(expected)


def test_distillation_is_zero_for_the_same_scores_and_positive_otherwise():
    assert distillation_loss(SCORES, SCORES, GROUP).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(torch.zeros(5), SCORES, GROUP).item() > 0


def test_ranker_learns_to_put_the_positive_first():
    torch.manual_seed(0)
    features = torch.randn(60, 3)
    labels = (features[:, 0] > 1.0).float()
    group = torch.arange(60) // 10
    model = CandidateRanker(n_features=3, n_items=60, item_dim=4, hidden=16, dropout=0.0)
    model.set_standardisation(features)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        loss = listwise_softmax_loss(model(features, torch.arange(60)), labels, group)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < listwise_softmax_loss(torch.zeros(60), labels, group).item() / 2


def test_hashed_catalog_bounds_the_parameters():
    small = CandidateRanker(n_features=15, n_items=92_000, item_dim=16, hidden=64, item_buckets=4096)
    assert small.param_count() < 250_000
    scores = small(torch.randn(7, 15), torch.tensor([0, 5, 91_999, 4096, 1, 2, 3]))
    assert scores.shape == (7,)

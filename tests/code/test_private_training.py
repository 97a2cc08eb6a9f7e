"""DP-SGD with the shopper as the unit, and the server's privacy ledger."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from models.candidates import LabelledCandidates
from models.losses import listwise_softmax_loss
from models.private_training import PrivateSteps, _shopper_loss, shopper_lists, train_ranker_private
from models.ranker import CandidateRanker
from tasks.federated.privacy import PrivacyLedger


def lists(n_shoppers: int = 6, seed: int = 0) -> LabelledCandidates:
    """Shoppers with 1–3 lists of 3–7 candidates each; feature 0 marks the positives."""
    rng = np.random.default_rng(seed)
    parts = []
    for shopper in range(n_shoppers):
        for _ in range(rng.integers(1, 4)):
            n = int(rng.integers(3, 8))
            labels = np.zeros(n, np.float32)
            labels[rng.integers(0, n)] = 1
            features = rng.normal(size=(n, 4)).astype(np.float32)
            features[:, 0] = labels * 3
            parts.append(LabelledCandidates(features, rng.integers(0, 50, n), np.zeros(n, np.int64), labels,
                                            np.array([1]), np.array([shopper])))
    return LabelledCandidates.concat(parts)


def model() -> CandidateRanker:
    torch.manual_seed(0)
    return CandidateRanker(n_features=4, n_items=50, item_dim=4, hidden=8, item_buckets=16, dropout=0.0,
                           log_features=True)


def test_padded_blocks_hold_every_list_of_each_shopper_once():
    train = lists()
    block = shopper_lists(train)
    assert int(block.mask.sum()) == len(train.items)
    assert float(block.labels.sum()) == float(train.labels.sum())
    assert block.mask.any(dim=2).sum(dim=1).tolist() == np.bincount(train.users).tolist()  # lists per shopper


def test_per_shopper_gradient_is_that_shoppers_mean_list_loss_gradient():
    train, ranker = lists(), model()
    block = shopper_lists(train)
    params = {k: v.detach() for k, v in ranker.named_parameters()}
    buffers = dict(ranker.named_buffers())
    grads = torch.func.vmap(torch.func.grad(_shopper_loss(ranker)), in_dims=(None, None, 0, 0, 0, 0))(
        params, buffers, block.features, block.items, block.labels, block.mask)
    shopper = 2  # compare with autograd on that shopper's lists alone, unpadded
    mine = train.subset(np.flatnonzero(train.users == shopper))
    ranker.zero_grad()
    scores = ranker(torch.from_numpy(mine.features), torch.from_numpy(mine.items))
    listwise_softmax_loss(scores, torch.from_numpy(mine.labels), torch.from_numpy(mine.group)).backward()
    for name, parameter in ranker.named_parameters():
        torch.testing.assert_close(grads[name][shopper], parameter.grad, rtol=1e-4, atol=1e-6)


def test_private_training_learns_the_signal_and_reports_its_steps():
    train, ranker = lists(n_shoppers=200), model()
    before = ranker(torch.from_numpy(train.features), torch.from_numpy(train.items)).detach()
    steps = train_ranker_private(ranker, train, epochs=5, lr=0.05, clip_norm=1.0, noise_multiplier=0.5,
                                 shoppers_per_batch=50)
    assert steps == PrivateSteps(0.5, 0.25, 20)
    after = ranker(torch.from_numpy(train.features), torch.from_numpy(train.items)).detach()
    positives = torch.from_numpy(train.labels) == 1
    margin = lambda s: float(s[positives].mean() - s[~positives].mean())  # noqa: E731
    assert margin(after) > margin(before) + 0.5
    assert ranker.feature_mean.abs().sum() == 0 and (ranker.feature_std == 1).all()  # no statistics of the data


def test_noise_is_required():
    with pytest.raises(ValueError, match="noise_multiplier"):
        train_ranker_private(model(), lists(), 1, 0.01, clip_norm=1.0, noise_multiplier=0.0)


def test_ledger_composes_every_node_and_stops_before_passing_the_target():
    round_steps = [PrivateSteps(1.0, 0.2, 5), PrivateSteps(1.0, 0.1, 10)]
    ledger = PrivacyLedger(delta=1e-4, target_epsilon=8.0)
    spent = []
    while not ledger.spent:
        spent.append(ledger.record(round_steps))
    reference = RDPAccountant()
    reference.history = [(1.0, 0.2, 5), (1.0, 0.1, 10)] * len(spent)
    assert spent[-1] == pytest.approx(reference.get_epsilon(1e-4))
    assert len(spent) > 1 and spent == sorted(spent) and spent[-1] <= 8.0
    reference.history += [(1.0, 0.2, 5), (1.0, 0.1, 10)]
    assert reference.get_epsilon(1e-4) > 8.0  # one more round would have passed the target


def test_no_shopper_contributes_more_than_the_clipping_norm():
    """Shoppers' gradients of norms 0.1 to 100: the clipped sum equals the sum of each scaled to ≤ C."""
    from models.private_training import clipped_sum

    torch.manual_seed(1)
    raw = torch.randn(5, 30)
    sizes = torch.tensor([0.1, 0.5, 2.0, 10.0, 100.0])
    grads = {"w": raw / raw.norm(dim=1, keepdim=True) * sizes[:, None]}
    summed, norms = clipped_sum(grads, clip_norm=1.0)
    torch.testing.assert_close(norms, sizes)
    contributions = grads["w"] * (1.0 / sizes).clamp(max=1.0)[:, None]
    assert float(contributions.norm(dim=1).max()) <= 1.0 + 1e-5
    torch.testing.assert_close(summed["w"], contributions.sum(0))


def test_the_released_sum_deviates_from_the_clipped_one_by_sigma_times_c():
    from models.private_training import gaussian_noise

    summed = {"a": torch.zeros(200, 50), "b": torch.ones(10_000)}
    for sigma, clip in ((0.5, 1.0), (2.0, 0.3)):
        released = gaussian_noise(summed, sigma, clip, torch.Generator().manual_seed(0))
        deviation = torch.cat([(released[k] - summed[k]).flatten() for k in summed])
        assert float(deviation.std()) == pytest.approx(sigma * clip, rel=0.03)
        assert abs(float(deviation.mean())) < 0.03 * sigma * clip

"""DP-SGD with the shopper as the unit, and the server's privacy ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from federated.privacy import PrivacyLedger
from models.candidates import LabelledCandidates
from models.losses import listwise_softmax_loss
from models.private_training import (
    PrivateSteps,
    _shopper_loss,
    clipped_sum,
    gaussian_noise,
    shopper_lists,
    train_ranker_private,
)
from models.ranker import CandidateRanker


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
            parts.append(
                LabelledCandidates(
                    features, rng.integers(0, 50, n), np.zeros(n, np.int64), labels, np.array([1]), np.array([shopper])
                )
            )
    return LabelledCandidates.concat(parts)


def model(dropout: float = 0.0) -> CandidateRanker:
    torch.manual_seed(0)
    return CandidateRanker(
        n_features=4, n_items=50, item_dim=4, hidden=8, item_buckets=16, dropout=dropout, log_features=True
    )


def parameters_of(ranker: CandidateRanker) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in ranker.named_parameters()}


class FirstFeature(nn.Module):
    """score = scale × feature 0 (scale = 1): a ranker whose scores are written in its input."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, features: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return features[:, 0] * self.scale


def test_padded_blocks_hold_every_list_of_each_shopper_once():
    train = lists()
    block = shopper_lists(train)
    assert int(block.mask.sum()) == len(train.items)
    assert float(block.labels.sum()) == float(train.labels.sum())
    assert block.mask.any(dim=2).sum(dim=1).tolist() == np.bincount(train.users).tolist()  # lists per shopper
    assert (block.features.dtype, block.items.dtype, block.labels.dtype, block.mask.dtype) == (
        torch.float32,
        torch.int64,
        torch.float32,
        torch.bool,
    )  # as ShopperLists documents


def test_a_list_without_candidates_is_kept_empty():
    """The last shopper's second list has no candidate rows (a user nothing was proposed to)."""
    train = lists(n_shoppers=3)
    empty = LabelledCandidates(
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0, np.float32),
        np.array([1]),
        np.array([2]),
    )
    block = shopper_lists(LabelledCandidates.concat([train, empty]))
    lists_per_shopper = np.bincount(train.users)
    assert block.items.shape[:2] == (3, max(lists_per_shopper.max(), lists_per_shopper[2] + 1))
    assert int(block.mask.sum()) == len(train.items)
    assert block.mask.any(dim=2).sum(dim=1).tolist() == lists_per_shopper.tolist()


def test_shopper_loss_by_hand():
    """Three lists of one shopper, scores = feature 0. List 0: scores (0, 0, 0), positives the first
    two → −½(log ⅓ + log ⅓) = log 3. List 1: scores (0, log 3) and a padded slot, positive the
    second → −log ¾. List 2: no positive, not counted. Loss = (log 3 + log 4/3) / 2 = log 2."""
    scores = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(3), 99.0], [5.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    ranker = FirstFeature()
    loss = _shopper_loss(ranker)
    params = {name: p.detach() for name, p in ranker.named_parameters()}
    items = torch.zeros(3, 3, dtype=torch.int64)

    def value(labels):
        return float(loss(params, {}, scores[..., None], items, labels, mask))

    assert value(labels) == pytest.approx(math.log(2), rel=1e-6)
    only_list_1 = labels.clone()
    only_list_1[0] = 0
    assert value(only_list_1) == pytest.approx(math.log(4 / 3), rel=1e-6)  # the mean over one list
    assert value(torch.zeros(3, 3)) == 0.0  # a shopper without any positive adds nothing


def test_per_shopper_gradient_is_that_shoppers_mean_list_loss_gradient():
    train, ranker = lists(), model()
    block = shopper_lists(train)
    params = {k: v.detach() for k, v in ranker.named_parameters()}
    buffers = dict(ranker.named_buffers())
    grads = torch.func.vmap(torch.func.grad(_shopper_loss(ranker)), in_dims=(None, None, 0, 0, 0, 0))(
        params, buffers, block.features, block.items, block.labels, block.mask
    )
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
    steps = train_ranker_private(
        ranker, train, epochs=5, lr=0.05, clip_norm=1.0, noise_multiplier=0.5, shoppers_per_batch=50
    )
    assert steps == PrivateSteps(0.5, 0.25, 20)
    after = ranker(torch.from_numpy(train.features), torch.from_numpy(train.items)).detach()
    positives = torch.from_numpy(train.labels) == 1
    margin = lambda s: float(s[positives].mean() - s[~positives].mean())  # noqa: E731
    assert margin(after) > margin(before) + 0.5
    assert ranker.feature_mean.abs().sum() == 0 and (ranker.feature_std == 1).all()  # no statistics of the data


def test_noise_and_a_clipping_norm_are_required():
    with pytest.raises(ValueError, match="noise_multiplier"):
        train_ranker_private(model(), lists(), 1, 0.01, clip_norm=1.0, noise_multiplier=0.0)
    with pytest.raises(ValueError, match="clip_norm"):
        train_ranker_private(model(), lists(), 1, 0.01, clip_norm=0.0, noise_multiplier=1.0)


def test_a_step_releases_the_noised_sum_over_the_expected_batch():
    """Every shopper sampled (rate 1), a norm no gradient reaches (no clipping), almost no noise and
    lr 0 (Adam leaves the weights): the gradient Adam was given is the mean of the shoppers' own
    gradients, each computed by autograd on that shopper's lists alone."""
    train, ranker = lists(), model()
    steps = train_ranker_private(
        ranker,
        train,
        epochs=1,
        lr=0.0,
        clip_norm=100.0,
        noise_multiplier=1e-6,
        shoppers_per_batch=len(np.unique(train.users)),
    )
    assert steps == PrivateSteps(1e-6, 1.0, 1)
    reference, shoppers = model(), np.unique(train.users)
    mean = {name: torch.zeros_like(p) for name, p in reference.named_parameters()}
    for shopper in shoppers:
        mine = train.subset(np.flatnonzero(train.users == shopper))
        reference.zero_grad()
        scores = reference(torch.from_numpy(mine.features), torch.from_numpy(mine.items))
        listwise_softmax_loss(scores, torch.from_numpy(mine.labels), torch.from_numpy(mine.group)).backward()
        for name, p in reference.named_parameters():
            mean[name] += p.grad / len(shoppers)
    for name, p in ranker.named_parameters():
        torch.testing.assert_close(p.grad, mean[name], rtol=1e-3, atol=1e-3)  # noise: std 1e-4 / 6


def test_the_sample_rate_is_at_most_one_and_the_default_batch_is_64_shoppers():
    assert train_ranker_private(
        model(), lists(), 2, 0.01, clip_norm=1.0, noise_multiplier=1.0, shoppers_per_batch=100
    ) == PrivateSteps(1.0, 1.0, 2)  # 6 shoppers, all in
    assert train_ranker_private(
        model(), lists(n_shoppers=128), 1, 0.01, clip_norm=1.0, noise_multiplier=1.0
    ) == PrivateSteps(1.0, 0.5, 2)  # 64 of 128


def test_steps_that_sample_nobody_still_release_noise():
    """20 shoppers at rate 1/20 for 20 steps: some steps sample nobody (P(none empty) ≈ 1e-4)."""
    ranker = model()
    before = parameters_of(ranker)
    steps = train_ranker_private(
        ranker, lists(n_shoppers=20), 1, 0.01, clip_norm=1.0, noise_multiplier=1.0, shoppers_per_batch=1
    )
    assert steps == PrivateSteps(1.0, 0.05, 20)
    after = parameters_of(ranker)
    assert all(torch.isfinite(p).all() for p in after.values())
    assert all(not torch.equal(before[name], after[name]) for name in before)  # noise moved every tensor


def test_private_training_is_reproducible_from_its_seed():
    """The sampling and the noise come from the seeded generator alone (the default seed is 0): the
    same seed gives the same model even when the global RNG has moved on, another seed another."""
    train = lists()
    default, zero, one = model(), model(), model()
    for ranker, seed in ((default, None), (zero, 0), (one, 1)):
        kwargs = {} if seed is None else {"seed": seed}
        train_ranker_private(
            ranker, train, 1, 0.05, clip_norm=1.0, noise_multiplier=0.5, shoppers_per_batch=2, **kwargs
        )
    a, b, c = (parameters_of(r) for r in (default, zero, one))
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert all(not torch.equal(a[name], c[name]) for name in a)


def test_a_ranker_with_dropout_trains_privately():
    """Dropout draws random masks inside the per-shopper vmap: each shopper gets its own."""
    ranker = model(dropout=0.2)
    before = parameters_of(ranker)
    steps = train_ranker_private(ranker, lists(), 1, 0.05, clip_norm=1.0, noise_multiplier=0.5, shoppers_per_batch=3)
    assert steps == PrivateSteps(0.5, 0.5, 2)
    assert all(not torch.equal(before[name], p) for name, p in parameters_of(ranker).items())


def test_ledger_composes_every_node_and_stops_before_passing_the_target():
    round_steps = [PrivateSteps(1.0, 0.2, 5), PrivateSteps(1.0, 0.1, 10)]
    ledger = PrivacyLedger(delta=1e-4, target_epsilon=8.0)
    spent = []
    for _ in range(200):  # bounded: a ledger that never marks the budget spent fails, not hangs
        spent.append(ledger.record(round_steps))
        if ledger.spent:
            break
    assert ledger.spent
    reference = RDPAccountant()
    reference.history = [(1.0, 0.2, 5), (1.0, 0.1, 10)] * len(spent)
    assert spent[-1] == pytest.approx(reference.get_epsilon(1e-4))
    assert len(spent) > 1 and spent == sorted(spent) and spent[-1] <= 8.0
    reference.history += [(1.0, 0.2, 5), (1.0, 0.1, 10)]
    assert reference.get_epsilon(1e-4) > 8.0  # one more round would have passed the target


def test_an_empty_ledger_has_spent_nothing():
    assert PrivacyLedger(delta=1e-5).epsilon() == 0.0
    assert PrivacyLedger(delta=1e-5, target_epsilon=1.0).spent is False


def test_the_ledger_keeps_every_nodes_steps_per_round():
    """What the server logs (privacy_rounds): each round's steps of every node, as recorded then."""
    first, second = [PrivateSteps(1.0, 0.2, 5), PrivateSteps(1.0, 0.1, 10)], [PrivateSteps(2.0, 0.5, 3)]
    ledger = PrivacyLedger(delta=1e-5)
    ledger.record(first)
    ledger.record(second)
    first.append(PrivateSteps(9.0, 1.0, 1))  # the caller's list changing later changes nothing
    assert ledger.rounds == [[PrivateSteps(1.0, 0.2, 5), PrivateSteps(1.0, 0.1, 10)], [PrivateSteps(2.0, 0.5, 3)]]


def test_a_round_that_lands_exactly_on_the_target_is_still_allowed():
    """'Past the target' is strictly above it: with the target set to ε after two rounds (an
    independent accountant), the first round leaves the budget open and the second closes it."""
    round_steps = [PrivateSteps(1.1, 0.05, 20)]
    reference = RDPAccountant()
    reference.history = [(1.1, 0.05, 20)] * 2
    ledger = PrivacyLedger(delta=1e-5, target_epsilon=reference.get_epsilon(1e-5))
    ledger.record(round_steps)
    assert not ledger.spent
    assert ledger.record(round_steps) == ledger.target_epsilon
    assert ledger.spent


def test_no_shopper_contributes_more_than_the_clipping_norm():
    """Shoppers' gradients of norms 0.1 to 100: the clipped sum equals the sum of each scaled to ≤ C."""
    torch.manual_seed(1)
    raw = torch.randn(5, 30)
    sizes = torch.tensor([0.1, 0.5, 2.0, 10.0, 100.0])
    grads = {"w": raw / raw.norm(dim=1, keepdim=True) * sizes[:, None]}
    summed, norms = clipped_sum(grads, clip_norm=1.0)
    torch.testing.assert_close(norms, sizes)
    contributions = grads["w"] * (1.0 / sizes).clamp(max=1.0)[:, None]
    assert float(contributions.norm(dim=1).max()) <= 1.0 + 1e-5
    torch.testing.assert_close(summed["w"], contributions.sum(0))


def test_a_tiny_gradient_passes_the_clipping_unchanged():
    """Norms far below C (down to 1e-13, and 0) are scaled by 1: neither flipped nor amplified."""
    grads = {"w": torch.tensor([[1e-13, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3e-12, 4e-12]])}
    summed, norms = clipped_sum(grads, clip_norm=1.0)
    torch.testing.assert_close(norms, torch.tensor([1e-13, 0.0, 5e-12]), rtol=1e-5, atol=0.0)
    torch.testing.assert_close(summed["w"], torch.tensor([1e-13, 3e-12, 4e-12]), rtol=1e-5, atol=0.0)


def test_the_noise_comes_from_the_given_generator():
    summed = {"a": torch.zeros(100)}
    first = gaussian_noise(summed, 1.0, 1.0, torch.Generator().manual_seed(7))["a"]
    torch.manual_seed(123)  # the global RNG plays no part
    again = gaussian_noise(summed, 1.0, 1.0, torch.Generator().manual_seed(7))["a"]
    other = gaussian_noise(summed, 1.0, 1.0, torch.Generator().manual_seed(8))["a"]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_released_sum_deviates_from_the_clipped_one_by_sigma_times_c():
    summed = {"a": torch.zeros(200, 50), "b": torch.ones(10_000)}
    for sigma, clip in ((0.5, 1.0), (2.0, 0.3)):
        released = gaussian_noise(summed, sigma, clip, torch.Generator().manual_seed(0))
        deviation = torch.cat([(released[k] - summed[k]).flatten() for k in summed])
        assert float(deviation.std()) == pytest.approx(sigma * clip, rel=0.03)
        assert abs(float(deviation.mean())) < 0.03 * sigma * clip

"""Differentially private training of a `CandidateRanker`: DP-SGD with the shopper as the privacy
unit (Abadi et al. 2016, user-level as in McMahan et al. 2018).

Each step samples every shopper independently with probability `sample_rate` (Poisson sampling,
what the RDP accountant assumes), computes one gradient per sampled shopper over all of that
shopper's lists, clips it to L2 norm `clip_norm`, sums, adds N(0, (noise_multiplier ×
clip_norm)²) to every coordinate and divides by the expected batch size. Adam then applies the
noised gradient (post-processing). The caller accounts ε from (noise_multiplier, sample_rate,
steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from models.candidates import LabelledCandidates
from models.ranker import CandidateRanker

PAD_SCORE = -1e9  # padded candidates get this score, so softmax gives them no mass


@dataclass(frozen=True)
class PrivateSteps:
    """What one private training ran: the accountant's inputs."""

    noise_multiplier: float
    sample_rate: float  # probability that a given shopper is in a step's batch
    steps: int


@dataclass
class ShopperLists:
    """Every list of a shopper in one padded block: (n_shoppers, max_lists, max_candidates, …);
    `mask` marks real candidates."""

    features: torch.Tensor  # float32 (S, W, L, n_features)
    items: torch.Tensor  # int64 (S, W, L)
    labels: torch.Tensor  # float32 (S, W, L)
    mask: torch.Tensor  # bool (S, W, L)


def shopper_lists(train: LabelledCandidates) -> ShopperLists:
    """Group `train`'s lists by shopper (`train.users`) and pad them to one block."""
    bounds = np.r_[0, np.cumsum(np.bincount(train.group, minlength=len(train.users)))]
    shoppers, slot = np.unique(train.users, return_inverse=True)
    per_shopper = np.bincount(slot)
    position = np.zeros(len(train.users), dtype=np.int64)  # each list's index among its shopper's lists
    for s in range(len(shoppers)):
        idx = np.flatnonzero(slot == s)
        position[idx] = np.arange(len(idx))
    width, length = int(per_shopper.max()), int(np.diff(bounds).max())
    shape = (len(shoppers), width, length)
    features = np.zeros((*shape, train.features.shape[1]), dtype=np.float32)
    items, labels, mask = np.zeros(shape, np.int64), np.zeros(shape, np.float32), np.zeros(shape, bool)
    for g in range(len(train.users)):
        n, at = bounds[g + 1] - bounds[g], (slot[g], position[g])
        rows = slice(bounds[g], bounds[g + 1])
        features[at][:n], items[at][:n], labels[at][:n], mask[at][:n] = (
            train.features[rows],
            train.items[rows],
            train.labels[rows],
            True,
        )
    return ShopperLists(*(torch.from_numpy(a) for a in (features, items, labels, mask)))


def _shopper_loss(model: CandidateRanker):
    """loss(params, buffers, one shopper's (W, L, …) block) → mean listwise softmax loss over the
    shopper's lists that have a positive (0 when none has)."""

    def loss(params, buffers, features, items, labels, mask):
        width, length = items.shape
        scores = functional_call(model, (params, buffers), (features.reshape(width * length, -1), items.reshape(-1)))
        log_p = torch.log_softmax(scores.reshape(width, length).masked_fill(~mask, PAD_SCORE), dim=1)
        positives = labels.sum(1)
        per_list = -(torch.where(mask, log_p, 0.0) * labels).sum(1) / positives.clamp(min=1)
        return per_list.sum() / (positives > 0).sum().clamp(min=1)

    return loss


def clipped_sum(grads: dict[str, torch.Tensor], clip_norm: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Σ over shoppers of each shopper's gradient scaled to L2 norm ≤ clip_norm (across all
    parameters together). grads: name → (n_shoppers, *shape). Returns (the sums, each shopper's
    norm before clipping)."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    scale = (clip_norm / (norms + 1e-12)).clamp(max=1.0)
    return {name: torch.einsum("s,s...->...", scale, g) for name, g in grads.items()}, norms


def gaussian_noise(
    summed: dict[str, torch.Tensor], noise_multiplier: float, clip_norm: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """`summed` + N(0, (noise_multiplier × clip_norm)²) on every coordinate: the released sum."""
    return {
        name: value + torch.normal(0.0, noise_multiplier * clip_norm, value.shape, generator=generator)
        for name, value in summed.items()
    }


def train_ranker_private(
    model: CandidateRanker,
    train: LabelledCandidates,
    epochs: int,
    lr: float,
    clip_norm: float,
    noise_multiplier: float,
    shoppers_per_batch: int = 64,
    seed: int = 0,
) -> PrivateSteps:
    """DP-SGD (see the module docstring) for `epochs` × ⌈n_shoppers / shoppers_per_batch⌉ steps.

    The model's feature standardisation is left as it is: statistics of the private data would
    leak outside the accounted budget (use `log_features=True` and the default mean 0 / std 1).
    """
    if noise_multiplier <= 0 or clip_norm <= 0:
        raise ValueError(f"noise_multiplier and clip_norm must be > 0, got {noise_multiplier} and {clip_norm}")
    block = shopper_lists(train)
    n_shoppers = len(block.items)
    sample_rate = min(1.0, shoppers_per_batch / n_shoppers)
    steps = epochs * int(np.ceil(1 / sample_rate))
    generator = torch.Generator().manual_seed(seed)
    names = [name for name, _ in model.named_parameters()]
    parameters = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    per_shopper_grad = vmap(grad(_shopper_loss(model)), in_dims=(None, None, 0, 0, 0, 0), randomness="different")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        chosen = torch.nonzero(torch.rand(n_shoppers, generator=generator) < sample_rate).squeeze(1)
        summed = {name: torch.zeros_like(parameters[name]) for name in names}
        if len(chosen):
            detached = {name: p.detach() for name, p in parameters.items()}
            grads = per_shopper_grad(
                detached, buffers, block.features[chosen], block.items[chosen], block.labels[chosen], block.mask[chosen]
            )
            summed, _ = clipped_sum(grads, clip_norm)
        released = gaussian_noise(summed, noise_multiplier, clip_norm, generator)
        expected_batch = sample_rate * n_shoppers
        for name in names:
            parameters[name].grad = released[name] / expected_batch
        optimiser.step()
    return PrivateSteps(noise_multiplier, sample_rate, steps)

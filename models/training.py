"""Train a `CandidateRanker` on labelled candidate lists with a listwise loss, optionally distilling
a teacher's scores (plain PyTorch)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from models.candidates import LabelledCandidates
from models.losses import distillation_loss, listwise_softmax_loss
from models.ranker import CandidateRanker

log = logging.getLogger(__name__)


def ndcg_at_k(scores: np.ndarray, data: LabelledCandidates, k: int = 10) -> float:
    """Mean NDCG@k over lists, with IDCG over min(full basket size, k) as in models.metrics
    (target items outside the candidates count as misses)."""
    discounts = 1 / np.log2(np.arange(2, k + 2))
    bounds = np.r_[0, np.cumsum(np.bincount(data.group, minlength=len(data.basket_sizes)))]
    values = []
    for g, size in enumerate(data.basket_sizes):
        rows = slice(bounds[g], bounds[g + 1])
        top = np.argsort(-scores[rows], kind="stable")[:k]
        values.append((data.labels[rows][top] * discounts[: len(top)]).sum() / discounts[: min(size, k)].sum())
    return float(np.mean(values)) if values else 0.0


def score(model: CandidateRanker, data: LabelledCandidates, batch_rows: int = 65536) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return (
            np.concatenate(
                [
                    model(
                        torch.from_numpy(data.features[s : s + batch_rows]),
                        torch.from_numpy(data.items[s : s + batch_rows]),
                    ).numpy()
                    for s in range(0, len(data.items), batch_rows)
                ]
            )
            if len(data.items)
            else np.zeros(0, np.float32)
        )


def train_ranker(
    model: CandidateRanker,
    train: LabelledCandidates,
    validation: LabelledCandidates | None,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    lists_per_batch: int = 256,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    teacher_scores: np.ndarray | None = None,
    distill_weight: float = 0.0,
    temperature: float = 1.0,
    label: str | None = None,
) -> list[float]:
    """Adam on the listwise softmax loss, `lists_per_batch` whole lists per step.

    Distillation: with `teacher_scores` (n_rows,) the loss is (1 − distill_weight) × listwise +
    distill_weight × KL(teacher ‖ student) within each list at `temperature` (models.losses).
    After each epoch the validation NDCG@10 (if `validation` is given) is passed to
    `on_epoch(epoch, ndcg)`; an Optuna pruner can raise there. With a `label`, every epoch logs a
    progress line (epoch, mean loss, seconds). Returns the per-epoch NDCG@10.
    """
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.set_standardisation(torch.from_numpy(train.features))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    bounds = np.r_[0, np.cumsum(np.bincount(train.group))]
    features, items, labels = (torch.from_numpy(a) for a in (train.features, train.items, train.labels))
    teacher = torch.from_numpy(teacher_scores.astype(np.float32)) if teacher_scores is not None else None
    history = []
    for epoch in range(epochs):
        started, losses = time.perf_counter(), []
        model.train()
        order = generator.permutation(len(bounds) - 1)
        for start in range(0, len(order), lists_per_batch):
            lists = order[start : start + lists_per_batch]
            rows = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in lists])
            group = torch.from_numpy(np.repeat(np.arange(len(lists)), bounds[lists + 1] - bounds[lists]))
            scores = model(features[rows], items[rows])
            loss = listwise_softmax_loss(scores, labels[rows], group)
            if teacher is not None:
                soft = distillation_loss(scores, teacher[rows], group, temperature)
                loss = (1 - distill_weight) * loss + distill_weight * soft
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.detach().item())
        if label:
            log.info(
                "%s: epoch %d/%d, mean loss %.4f, %.1fs",
                label,
                epoch + 1,
                epochs,
                float(np.mean(losses)),
                time.perf_counter() - started,
            )
        if validation is not None:
            history.append(ndcg_at_k(score(model, validation), validation))
            if on_epoch:
                on_epoch(epoch, history[-1])
    return history

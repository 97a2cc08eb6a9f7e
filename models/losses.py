"""Ranking losses over candidate lists. Rows are grouped by user: `group` (n_rows,) holds a
dense group index 0..n_groups-1 per row."""

from __future__ import annotations

import torch


def group_log_softmax(scores: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(n_rows,) log-softmax of `scores` within each group."""
    n_groups = int(group.max()) + 1 if len(group) else 0
    top = torch.full((n_groups,), -torch.inf, dtype=scores.dtype).scatter_reduce(
        0, group, scores.detach(), reduce="amax", include_self=True
    )
    shifted = scores - top[group]
    total = torch.zeros(n_groups, dtype=scores.dtype).index_add(0, group, shifted.exp())
    return shifted - total.log()[group]


def listwise_softmax_loss(scores: torch.Tensor, labels: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Mean over groups with ≥1 positive of −(1/|pos|) Σ_pos log softmax(scores)_pos.

    The next basket's items are the positives; minimising this pushes them above the other
    candidates of the same user (ListNet with a uniform target over the positives).
    """
    log_p = group_log_softmax(scores, group)
    n_groups = int(group.max()) + 1
    positives = torch.zeros(n_groups, dtype=scores.dtype).index_add(0, group, labels)
    per_group = -torch.zeros(n_groups, dtype=scores.dtype).index_add(0, group, log_p * labels)
    has_positive = positives > 0
    return (per_group[has_positive] / positives[has_positive]).mean()


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, group: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean over groups of KL(teacher ‖ student) between their softmaxes within the group,
    at `temperature` (scaled by T² so gradients keep their size, as in Hinton et al. 2015)."""
    log_s = group_log_softmax(student / temperature, group)
    log_t = group_log_softmax(teacher.detach() / temperature, group)
    n_groups = int(group.max()) + 1
    kl = torch.zeros(n_groups, dtype=student.dtype).index_add(0, group, log_t.exp() * (log_t - log_s))
    return kl.mean() * temperature**2
